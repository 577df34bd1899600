// libjetmamba_plugins.so: every jetmamba op as a TensorRT IPluginV3, for TensorRT to load
// (IPluginRegistry::loadLibrary, trt.get_plugin_registry().load_library, trtexec --dynamicPlugins).
//
// TensorRT looks up two C symbols in a plugin library: getCreators (the creators it registers, by
// name, version and namespace) and setLoggerFinder (how the plugins reach TensorRT's logger). The
// library links no TensorRT library: the plugin API is all virtual calls on objects TensorRT owns.
#include "common/trt_ops.h"
#include "common/trt_plugin.h"

// Each op folder defines its glue (plugins/<folder>/<folder>_plugin.cpp, JM_TRT_DEFINE_GLUE).
#define JM_DECLARE_GLUE(Op, folder) const ::jm::trt::OpGlue& jm_trt_glue_##folder();
JM_TRT_FOR_EACH_OP(JM_DECLARE_GLUE)
#undef JM_DECLARE_GLUE

namespace {

// The creator registry: one creator per op, made on first use and alive as long as the library.
struct Registry {
  std::vector<std::unique_ptr<jm::trt::Creator>> creators;
  std::vector<nvinfer1::IPluginCreatorInterface*> interfaces;

  Registry() {
#define JM_ADD_CREATOR(Op, folder) creators.push_back(std::make_unique<jm::trt::Creator>(jm_trt_glue_##folder()));
    JM_TRT_FOR_EACH_OP(JM_ADD_CREATOR)
#undef JM_ADD_CREATOR
    for (auto& c : creators) interfaces.push_back(c.get());
  }
};

Registry& registry() {
  static Registry r;  // thread-safe initialisation
  return r;
}

}  // namespace

extern "C" JM_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  try {
    Registry& r = registry();
    nbCreators = static_cast<int32_t>(r.interfaces.size());
    return r.interfaces.data();
  } catch (const std::exception& e) {
    jm::trt::report_error(std::string("getCreators failed: ") + e.what());
    nbCreators = 0;
    return nullptr;
  }
}

extern "C" JM_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) { jm::trt::set_logger_finder(finder); }

// The calling thread's last error message ("" if none): why createPlugin returned nullptr or a
// method returned non-zero, for callers without a TensorRT logger (tests, tools).
extern "C" JM_TRT_EXPORT const char* jm_trt_last_error() { return jm::trt::last_error(); }
extern "C" JM_TRT_EXPORT void jm_trt_clear_last_error() { jm::trt::clear_last_error(); }
