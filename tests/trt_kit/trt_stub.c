/*
 * Introspection-only stand-ins for the TensorRT shared libraries
 * (libnvinfer.so.N, libnvonnxparser.so.N, libnvinfer_plugin.so.N).
 *
 * The TensorRT Python bindings (tensorrt_bindings/tensorrt.so, 10.x and 11.x)
 * only import 9 plain C symbols from these libraries (the C++ API is reached
 * through vtables of objects returned by the *_INTERNAL factories), so no
 * C++ typeinfo/vtable objects are needed.  Every function here is a no-op that
 * returns NULL / 0 / false.  Anything that actually tries to create a TensorRT
 * object (Builder, Runtime, Refitter, OnnxParser, plugin registry) will get a
 * NULL pointer back: THESE LIBRARIES ARE FOR IMPORT + INTROSPECTION ONLY.
 *
 * Build: tests/trt_kit/install.py (one source, compiled three times per major version,
 * each with its own SONAME).  -DTRT_STUB_LIB selects which symbols go where.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define EXPORT __attribute__((visibility("default")))

static void stub_note(const char *fn)
{
    if (getenv("TRT_STUB_QUIET") == NULL)
        fprintf(stderr, "[trt-stub] %s() called: stub TensorRT library, returning NULL/0 "
                        "(introspection only)\n", fn);
}

#if TRT_STUB_LIB == 1 /* libnvinfer.so.N */
/* nvinfer1::IBuilder* createInferBuilder_INTERNAL(void* logger, int32_t version) */
EXPORT void *createInferBuilder_INTERNAL(void *logger, int32_t version)
{ (void)logger; (void)version; stub_note(__func__); return NULL; }
/* nvinfer1::IRuntime* createInferRuntime_INTERNAL(void* logger, int32_t version) */
EXPORT void *createInferRuntime_INTERNAL(void *logger, int32_t version)
{ (void)logger; (void)version; stub_note(__func__); return NULL; }
/* nvinfer1::IRefitter* createInferRefitter_INTERNAL(void* engine, void* logger, int32_t version) */
EXPORT void *createInferRefitter_INTERNAL(void *engine, void *logger, int32_t version)
{ (void)engine; (void)logger; (void)version; stub_note(__func__); return NULL; }
/* nvinfer1::IPluginRegistry* getPluginRegistry() */
EXPORT void *getPluginRegistry(void)
{ stub_note(__func__); return NULL; }
/* nvinfer1::IPluginRegistry* getBuilderPluginRegistry(nvinfer1::EngineCapability) */
EXPORT void *getBuilderPluginRegistry(int32_t capability)
{ (void)capability; stub_note(__func__); return NULL; }
/* int32_t getInferLibVersion()  (not imported by the bindings; provided for ctypes users) */
EXPORT int32_t getInferLibVersion(void)
{ return TRT_STUB_VERSION; }

#elif TRT_STUB_LIB == 2 /* libnvonnxparser.so.N */
/* nvonnxparser::IParser* createNvOnnxParser_INTERNAL(void* network, void* logger, int32_t version) */
EXPORT void *createNvOnnxParser_INTERNAL(void *network, void *logger, int32_t version)
{ (void)network; (void)logger; (void)version; stub_note(__func__); return NULL; }
/* nvonnxparser::IParserRefitter* createNvOnnxParserRefitter_INTERNAL(void* refitter, void* logger, int32_t version) */
EXPORT void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int32_t version)
{ (void)refitter; (void)logger; (void)version; stub_note(__func__); return NULL; }
/* int32_t getNvOnnxParserVersion() */
EXPORT int32_t getNvOnnxParserVersion(void)
{ return TRT_STUB_VERSION; }

#elif TRT_STUB_LIB == 3 /* libnvinfer_plugin.so.N */
/* bool initLibNvInferPlugins(void* logger, const char* libNamespace) */
EXPORT _Bool initLibNvInferPlugins(void *logger, const char *libNamespace)
{ (void)logger; (void)libNamespace; stub_note(__func__); return 0; }

#else
#error "define TRT_STUB_LIB to 1 (nvinfer), 2 (nvonnxparser) or 3 (nvinfer_plugin)"
#endif
