// jetmamba's TensorRT glue: one IPluginV3 and one IPluginCreatorV3One for every op, parameterised by
// the op's table (trt_ops.h) and its folder's launcher (OpGlue). Thin on purpose: field parsing,
// shape and dtype rules live in trt_core.h, the kernels behind plain C launchers; this file only
// translates between TensorRT's types and those.
//
// Lifecycle, as TensorRT drives it:
//   build:   creator.createPlugin(fields, kBUILD) -> getOutputDataTypes / getOutputShapes /
//            supportsFormatCombination -> configurePlugin -> getWorkspaceSize -> enqueue (timing)
//            -> getFieldsToSerialize (into the engine)
//   runtime: creator.createPlugin(serialized fields, kRUNTIME) -> attachToContext (a clone per
//            execution context) -> onShapeChange -> enqueue ...
// Errors are reported through the logger TensorRT hands the library (setLoggerFinder) and kept as
// the calling thread's last error (jm_trt_last_error(), for tests and for users without a logger).
#pragma once

#include "common/trt_core.h"
#include "common/trt_headers.h"

namespace jm {
namespace trt {

// The library's logger: TensorRT calls setLoggerFinder once when it loads the library.
void set_logger_finder(nvinfer1::ILoggerFinder* finder);
// Log `message` as an error (when a logger is set) and keep it as this thread's last error.
void report_error(const std::string& message);
const char* last_error();
void clear_last_error();

class Plugin final : public nvinfer1::IPluginV3,
                     public nvinfer1::IPluginV3OneCore,
                     public nvinfer1::IPluginV3OneBuild,
                     public nvinfer1::IPluginV3OneRuntime {
 public:
  Plugin(const OpGlue& glue, ParsedFields fields, std::string layer_name);
  ~Plugin() override;
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;

  const ParsedFields& fields() const { return fields_; }

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, const nvinfer1::DataType* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs, const nvinfer1::DimsExprs* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  int32_t getNbOutputs() const noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nbOutputs) const noexcept override;
  const char* getMetadataString() noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs, const nvinfer1::PluginTensorDesc* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

 private:
  bool fail(const std::string& message) const;
  // Device copies of the kFloats fields (per-channel scales), made once; freed by the destructor.
  bool upload_device_floats();
  // Binding, rank and dimension checks of concrete (or -1) input dims; reports the reason.
  bool check_inputs(const nvinfer1::Dims* dims, int32_t nbInputs, Binding* binding) const;

  const OpGlue& glue_;
  const OpTable& op_;
  ParsedFields fields_;
  std::string layer_name_;
  std::vector<float*> device_floats_;  // by field index
  bool uploaded_ = false;
  int32_t nb_inputs_ = -1;  // as configurePlugin / onShapeChange saw them (enqueue is not told)
  std::vector<nvinfer1::PluginField> serialized_;
  nvinfer1::PluginFieldCollection serialized_collection_{};
  std::string metadata_;
};

class Creator final : public nvinfer1::IPluginCreatorV3One {
 public:
  explicit Creator(const OpGlue& glue);

  const OpGlue& glue() const { return glue_; }

  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override;
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

 private:
  const OpGlue& glue_;
  std::vector<nvinfer1::PluginField> field_names_;
  nvinfer1::PluginFieldCollection field_collection_{};
};

}  // namespace trt
}  // namespace jm
