"""Autospec'd stand-ins for TensorRT's native objects, checked against the REAL bindings.

Runs inside a process that imported the real ``tensorrt`` of one release on stub native
libraries (``tests/trt_kit/install.py``). What a fake made by :meth:`Fakes.make` enforces:

* ``mock.create_autospec(cls, spec_set=True, instance=True)`` of the real class: reading or
  setting a member the release lacks raises AttributeError; real enums (never mocked)
  raise on removed members (``trt.BuilderFlag.FP16`` on 11.x).
* Every method call is bound against the pybind11 signature(s) at the top of the real
  method's ``__doc__`` (autospec cannot: pybind11 methods expose no inspectable
  signature): argument count, keyword names, required arguments and argument types
  (``typing.SupportsInt`` → int, ``str``, ``bool``, buffers, TensorRT classes and enums,
  ``Dims`` from a tuple/list). A mismatch raises :class:`SignatureError` (a TypeError, as
  pybind11's "incompatible function arguments" is).
* Properties are descriptors of the real property: a read-only one refuses assignment
  (as pybind11 does) and assigned values are type-checked against the setter's signature.
* Return values come from the wiring given to :meth:`make` (a value, or a function of the
  bound arguments) or else from the signature's return annotation: ``bool`` → True,
  ``int`` → 0, a TensorRT class → another fake of that class, ``IHostMemory`` → a bytes
  stand-in that supports the buffer protocol but no attribute the real class lacks.

Every call is recorded in :attr:`Fakes.calls` for the scenarios to assert on.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from unittest import mock

__all__ = ["SignatureError", "Signature", "Call", "Fakes", "parse_signatures"]

_PREFIX = "tensorrt_bindings.tensorrt."
_ALIASES = {  # C++ names that pybind11 printed before the Python class was registered
    "nvonnxparser::IParserError": "ParserError",
    "nvonnxparser::OnnxParserFlag": "OnnxParserFlag",
}


class SignatureError(TypeError):
    """A call that the real pybind11 method would reject."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    has_default: bool


@dataclass(frozen=True)
class Signature:
    text: str
    params: tuple[Param, ...]
    returns: str


@dataclass
class Call:
    owner: str
    member: str
    args: dict[str, Any]
    target: Any = field(repr=False, default=None)


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


def _parse_one(name: str, text: str) -> Signature:
    m = re.match(r"^%s\((.*)\) -> (.*)$" % re.escape(name), text.strip())  # noqa: UP031
    if m is None:
        raise ValueError(f"cannot parse pybind11 signature {text!r}")
    params = []
    for raw in _split_top(m.group(1)):
        pname, _, rest = raw.partition(": ")
        ptype, eq, _default = rest.partition(" = ")
        params.append(Param(pname.strip(), ptype.strip(), bool(eq)))
    if params and params[0].name in ("self", "arg0"):
        params = params[1:]
    return Signature(text.strip(), tuple(params), m.group(2).strip())


def parse_signatures(name: str, doc: str | None) -> list[Signature]:
    """The pybind11 signatures at the top of ``doc`` (one, or each overload)."""
    lines = (doc or "").strip("\n").splitlines()
    if not lines:
        return []
    if len(lines) > 1 and lines[1].strip() == "Overloaded function.":
        pat = re.compile(r"^\d+\.\s+(%s\(.*)$" % re.escape(name))  # noqa: UP031
        return [_parse_one(name, m.group(1)) for ln in lines[2:] if (m := pat.match(ln.strip()))]
    if lines[0].strip().startswith(name + "("):
        return [_parse_one(name, lines[0])]
    return []


class _Returns:
    def __init__(self, value: Any) -> None:
        self.value = value


def returns(value: Any) -> _Returns:
    """Wire a callable itself as a return value (plain callables are called with the args)."""
    return _Returns(value)


class _FakeProperty:
    """A data descriptor standing in for one real pybind11 property on one fake."""

    def __init__(self, fakes: Fakes, cls: type, name: str, prop: property) -> None:
        self.fakes, self.cls, self.name = fakes, cls, name
        getter = _parse_one("", (prop.fget.__doc__ or "").strip().splitlines()[0]) if prop.fget else None
        self.type = getter.returns if getter else "object"
        self.setter_type = None
        if prop.fset is not None:
            sig = _parse_one("", (prop.fset.__doc__ or "").strip().splitlines()[0])
            self.setter_type = sig.params[-1].type if sig.params else "object"

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        wiring = self.fakes._wiring[id(obj)]
        self.fakes.calls.append(Call(self.cls.__name__, self.name, {}, obj))
        if self.name in wiring:
            value = wiring[self.name]
            return value.value if isinstance(value, _Returns) else value
        value = self.fakes.default(self.type)
        wiring[self.name] = value  # the same object on every read, like a real property
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        if self.setter_type is None:
            raise AttributeError(f"property {self.name!r} of {self.cls.__name__!r} object has no setter")
        if not self.fakes.matches(value, self.setter_type):
            raise SignatureError(
                f"{self.cls.__name__}.{self.name} = {value!r}: the real property takes {self.setter_type}"
            )
        self.fakes.calls.append(Call(self.cls.__name__, self.name, {"value": value}, obj))
        self.fakes._wiring[id(obj)][self.name] = value


class Fakes:
    """Factory of checked fakes for one imported ``tensorrt`` module (see the module doc).

    ``check_signatures=False`` leaves only what plain autospec checks (names), to show
    what the signature layer adds.
    """

    def __init__(self, trt: ModuleType, *, check_signatures: bool = True) -> None:
        self.trt = trt
        self.check_signatures = check_signatures
        self.calls: list[Call] = []
        self.unknown_types: set[str] = set()
        self._wiring: dict[int, dict[str, Any]] = {}
        self._keep: list[Any] = []  # fakes stay alive so their id()s stay unique

    # -- resolving TensorRT names -------------------------------------------------------
    def resolve(self, type_text: str) -> Any:
        name = _ALIASES.get(type_text, type_text)
        if name.startswith(_PREFIX):
            name = name[len(_PREFIX) :]
        obj: Any = self.trt
        for part in name.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj if isinstance(obj, type) else None

    @staticmethod
    def _is_enum(cls: type) -> bool:
        return hasattr(cls, "__members__")

    # -- type checks --------------------------------------------------------------------
    def matches(self, value: Any, type_text: str) -> bool:
        t = type_text.strip()
        if t in ("object", "typing.Any"):
            return True
        if t == "None":
            return value is None
        m = re.fullmatch(r"typing\.Optional\[(.*)\]", t)
        if m:
            return value is None or self.matches(value, m.group(1))
        if len(alts := [a.strip() for a in _split_top(t.replace(" | ", ","))]) > 1 and "[" not in t:
            return any(self.matches(value, a) for a in alts)
        if t in ("typing.SupportsInt", "int"):
            return isinstance(value, int) or type(value).__module__ == "numpy" and hasattr(value, "__index__")
        if t in ("typing.SupportsFloat", "float"):
            return isinstance(value, (int, float))
        if t == "str":
            return isinstance(value, str)
        if t == "bool":
            return isinstance(value, bool)
        if t in ("typing_extensions.Buffer", "collections.abc.Buffer", "buffer"):
            try:
                memoryview(value)
            except TypeError:
                return False
            return True
        if t in ("tuple", "list", "dict"):
            return isinstance(value, {"tuple": tuple, "list": list, "dict": dict}[t])
        m = re.fullmatch(r"(?:list|typing\.List|collections\.abc\.Sequence|typing\.Sequence)\[(.*)\]", t)
        if m:
            return isinstance(value, (list, tuple) if "Sequence" in t else list) and all(
                self.matches(v, m.group(1)) for v in value
            )
        cls = self.resolve(t)
        if cls is None:
            self.unknown_types.add(t)
            return True
        if cls.__name__.startswith("Dims") and isinstance(value, (tuple, list)):
            return all(isinstance(v, int) for v in value)  # pybind11 implicit conversion
        if isinstance(value, cls):
            return True
        spec = getattr(value, "_spec_class", None)
        return isinstance(value, mock.NonCallableMock) and isinstance(spec, type) and issubclass(spec, cls)

    def bind(self, owner: str, name: str, sigs: list[Signature], args: tuple, kwargs: dict) -> dict[str, Any]:
        """Bind a call as pybind11 would (first matching overload) or raise SignatureError."""
        if not sigs:
            raise SignatureError(f"{owner}.{name}: no pybind11 signature in the real __doc__ to check against")
        reasons = []
        for sig in sigs:
            try:
                return self._bind_one(sig, args, kwargs)
            except SignatureError as exc:
                reasons.append(f"    {sig.text}\n      -> {exc}")
        shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        raise SignatureError(
            f"{owner}.{name}(): incompatible function arguments ({shown}); the real release accepts:\n"
            + "\n".join(reasons)
        )

    def _bind_one(self, sig: Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
        names = [p.name for p in sig.params]
        if len(args) > len(sig.params):
            raise SignatureError(f"takes {len(sig.params)} arguments, {len(args)} given")
        bound = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise SignatureError(f"unexpected keyword argument {key!r}")
            if key in bound:
                raise SignatureError(f"multiple values for argument {key!r}")
            bound[key] = value
        missing = [p.name for p in sig.params if not p.has_default and p.name not in bound]
        if missing:
            raise SignatureError(f"missing required argument(s) {missing}")
        for p in sig.params:
            if p.name in bound and not self.matches(bound[p.name], p.type):
                raise SignatureError(f"argument {p.name!r}={bound[p.name]!r} is not {p.type}")
        return bound

    # -- default return values ----------------------------------------------------------
    def host_memory(self, data: bytes) -> Any:
        """An ``IHostMemory`` stand-in: bytes (buffer protocol, like the real one) that
        refuses every public attribute the real class lacks."""
        allowed = {n for n in dir(self.trt.IHostMemory) if not n.startswith("_")}
        trt = self.trt

        class IHostMemory(bytes):
            def __getattribute__(self, attr: str) -> Any:
                if attr.startswith("__") or attr in allowed:
                    return bytes.__getattribute__(self, attr)
                raise AttributeError(f"'IHostMemory' object has no attribute {attr!r}")

            nbytes = property(lambda self: len(self))
            dtype = property(lambda self: trt.DataType.UINT8)

        return IHostMemory(data)

    def default(self, type_text: str) -> Any:
        t = type_text.strip()
        simple = {"None": None, "bool": True, "int": 0, "float": 0.0, "str": ""}
        if t in simple:
            return simple[t]
        if t.startswith(("list[", "typing.List[")):
            return []
        cls = self.resolve(t)
        if cls is None:
            raise NotImplementedError(f"no default for return type {t!r}: wire a value")
        if cls is self.trt.IHostMemory:
            return self.host_memory(b"fake host memory")
        if cls.__name__.startswith("Dims"):
            return cls(())
        if self._is_enum(cls):
            return next(iter(cls.__members__.values()))
        return self.make(cls)

    # -- fakes --------------------------------------------------------------------------
    def make(self, cls: type, **wiring: Any) -> Any:
        """A checked autospec'd instance of the real ``cls``; ``wiring``: member → value,
        or (methods) a function of the bound-arguments dict, or :func:`returns`."""
        fake = mock.create_autospec(cls, spec_set=True, instance=True)
        self._keep.append(fake)
        self._wiring[id(fake)] = {}
        for name in dir(cls):
            if name.startswith("_"):
                continue
            raw = next((k.__dict__[name] for k in cls.__mro__ if name in k.__dict__), None)
            if isinstance(raw, property):
                setattr(type(fake), name, _FakeProperty(self, cls, name, raw))
            elif callable(raw) and not isinstance(raw, type):
                getattr(fake, name).side_effect = self._method(cls, name, raw, fake)
        self.wire(fake, **wiring)
        return fake

    def wire(self, fake: Any, **wiring: Any) -> Any:
        spec = fake._spec_class
        for name in wiring:
            if not hasattr(spec, name):
                raise AttributeError(f"cannot wire {spec.__name__}.{name}: the real class has no such member")
        self._wiring[id(fake)].update(wiring)
        return fake

    def _method(self, cls: type, name: str, raw: Any, fake: Any) -> Callable[..., Any]:
        sigs = parse_signatures(name, getattr(raw, "__doc__", None))

        def effect(*args: Any, **kwargs: Any) -> Any:
            if self.check_signatures:
                bound = self.bind(cls.__name__, name, sigs, args, kwargs)
            else:  # what plain autospec allows: anything; named after the first overload
                names = [p.name for p in sigs[0].params] if sigs else []
                bound = {**{(names[i] if i < len(names) else f"arg{i}"): a for i, a in enumerate(args)}, **kwargs}
            self.calls.append(Call(cls.__name__, name, bound, fake))
            wired = self._wiring[id(fake)].get(name, inspect.Parameter.empty)
            if isinstance(wired, _Returns):
                return wired.value
            if wired is inspect.Parameter.empty:
                return self.default(sigs[0].returns if sigs else "object")
            return wired(bound) if callable(wired) and not isinstance(wired, mock.NonCallableMock) else wired

        return effect

    def constructor(self, cls: type, instance: Any) -> Callable[..., Any]:
        """Stand-in for ``trt.<cls>``: checks the arguments against the real ``__init__``
        signature and returns ``instance`` (or ``instance(bound)`` if it is a function)."""
        sigs = parse_signatures("__init__", cls.__init__.__doc__)

        def construct(*args: Any, **kwargs: Any) -> Any:
            bound = self.bind(cls.__name__, "__init__", sigs, args, kwargs) if self.check_signatures else {}
            self.calls.append(Call(cls.__name__, "__init__", bound))
            return (
                instance(bound) if callable(instance) and not isinstance(instance, mock.NonCallableMock) else instance
            )

        return construct

    def calls_to(self, owner: str, member: str) -> list[dict[str, Any]]:
        """Bound arguments of each recorded call of ``owner.member`` (property reads: {})."""
        return [c.args for c in self.calls if c.owner == owner and c.member == member]

    def value_of(self, fake: Any, member: str) -> Any:
        """What the code under test assigned to a property of ``fake`` (or its wiring)."""
        return self._wiring[id(fake)].get(member)
