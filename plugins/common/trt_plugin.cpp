// jetmamba's generic IPluginV3 and IPluginCreatorV3One: see trt_plugin.h.
#include "common/trt_plugin.h"

#include <atomic>
#include <cstring>
#include <sstream>
#include <utility>

#include "common/trt_ops.h"

namespace jm {
namespace trt {

// trt_core numbers dtypes and field types as TensorRT does, so that values pass through unchanged.
static_assert(static_cast<int32_t>(nvinfer1::DataType::kFLOAT) == static_cast<int32_t>(Dtype::kFloat), "");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kHALF) == static_cast<int32_t>(Dtype::kHalf), "");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kINT8) == static_cast<int32_t>(Dtype::kInt8), "");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kUINT8) == static_cast<int32_t>(Dtype::kUInt8), "");
static_assert(static_cast<int32_t>(nvinfer1::PluginFieldType::kFLOAT32) == static_cast<int32_t>(RawType::kFloat32), "");
static_assert(static_cast<int32_t>(nvinfer1::PluginFieldType::kFLOAT64) == static_cast<int32_t>(RawType::kFloat64), "");
static_assert(static_cast<int32_t>(nvinfer1::PluginFieldType::kINT8) == static_cast<int32_t>(RawType::kInt8), "");
static_assert(static_cast<int32_t>(nvinfer1::PluginFieldType::kINT16) == static_cast<int32_t>(RawType::kInt16), "");
static_assert(static_cast<int32_t>(nvinfer1::PluginFieldType::kINT32) == static_cast<int32_t>(RawType::kInt32), "");
static_assert(static_cast<int32_t>(nvinfer1::PluginFieldType::kINT64) == static_cast<int32_t>(RawType::kInt64), "");
static_assert(static_cast<int32_t>(nvinfer1::PluginFieldType::kCHAR) == static_cast<int32_t>(RawType::kChar), "");
static_assert(nvinfer1::Dims::MAX_DIMS == kMaxRank, "");

// ---- errors ---------------------------------------------------------------------------------------

namespace {

// The one logger pointer of the library (set by TensorRT through setLoggerFinder).
std::atomic<nvinfer1::ILoggerFinder*> g_logger_finder{nullptr};
thread_local std::string t_last_error;

Shape shape_of(const nvinfer1::Dims& dims) {
  Shape s;
  s.rank = dims.nbDims;
  if (s.rank < 0 || s.rank > kMaxRank) {
    s.rank = -2;  // malformed: matches no rule
    return s;
  }
  for (int j = 0; j < s.rank; ++j) s.d[j] = dims.d[j];
  return s;
}

// Input shapes in spec order (absent optional inputs rank -1) from TensorRT's actual order.
void spec_shapes(const OpTable& op, const Binding& binding, const nvinfer1::Dims* dims, Shape* out) {
  for (int i = 0; i < op.nb_inputs; ++i) {
    const int32_t actual = binding.actual_of_spec[i];
    out[i] = actual < 0 ? Shape{} : shape_of(dims[actual]);
  }
}

}  // namespace

void set_logger_finder(nvinfer1::ILoggerFinder* finder) { g_logger_finder.store(finder); }

void report_error(const std::string& message) {
  t_last_error = message;
  nvinfer1::ILoggerFinder* finder = g_logger_finder.load();
  nvinfer1::ILogger* logger = finder ? finder->findLogger() : nullptr;
  if (logger) logger->log(nvinfer1::ILogger::Severity::kERROR, ("jetmamba plugin: " + message).c_str());
}

const char* last_error() { return t_last_error.c_str(); }
void clear_last_error() { t_last_error.clear(); }

// ---- Plugin ---------------------------------------------------------------------------------------

Plugin::Plugin(const OpGlue& glue, ParsedFields fields, std::string layer_name)
    : glue_(glue),
      op_(*glue.op),
      fields_(std::move(fields)),
      layer_name_(std::move(layer_name)),
      device_floats_(op_.nb_fields, nullptr) {}

Plugin::~Plugin() {
  for (float* p : device_floats_)
    if (p) cudaFree(p);
}

bool Plugin::fail(const std::string& message) const {
  // "<layer>: <Op>: <what>", the op named once (trt_core's messages start with it)
  const std::string text = message.rfind(op_.name, 0) == 0 ? message : std::string(op_.name) + ": " + message;
  report_error(layer_name_.empty() ? text : layer_name_ + ": " + text);
  return false;
}

nvinfer1::IPluginCapability* Plugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* Plugin::clone() noexcept {
  try {
    // a fresh object: the clone uploads its own device copies (each execution context owns one)
    auto* copy = new Plugin(glue_, fields_, layer_name_);
    copy->nb_inputs_ = nb_inputs_;
    return copy;
  } catch (const std::exception& e) {
    fail(std::string("clone failed: ") + e.what());
    return nullptr;
  }
}

const char* Plugin::getPluginName() const noexcept { return op_.name; }
const char* Plugin::getPluginVersion() const noexcept { return kPluginVersion; }
const char* Plugin::getPluginNamespace() const noexcept { return kPluginNamespace; }

bool Plugin::check_inputs(const nvinfer1::Dims* dims, int32_t nbInputs, Binding* binding) const {
  std::string error;
  if (!bind_inputs(op_, nbInputs, binding, &error)) return fail(error);
  Shape shapes[kMaxTensors];
  spec_shapes(op_, *binding, dims, shapes);
  if (!check_shapes(op_, fields_, shapes, &error)) return fail(error);
  if (glue_.check) {
    error = glue_.check(op_, fields_, shapes);
    if (!error.empty()) return fail(error);
  }
  return true;
}

bool Plugin::upload_device_floats() {
  if (uploaded_) return true;
  for (int k = 0; k < op_.nb_fields; ++k) {
    if (op_.fields[k].kind != FieldKind::kFloats) continue;
    const std::vector<float>& values = fields_.at(k).fs;
    const size_t bytes = values.size() * sizeof(float);
    float* device = nullptr;
    cudaError_t err = cudaMalloc(reinterpret_cast<void**>(&device), bytes);
    if (err == cudaSuccess) err = cudaMemcpy(device, values.data(), bytes, cudaMemcpyHostToDevice);
    if (err != cudaSuccess) {
      if (device) cudaFree(device);
      return fail(std::string("could not copy field ") + op_.fields[k].name + " to the device: " +
                  cudaGetErrorString(err));
    }
    device_floats_[k] = device;
  }
  uploaded_ = true;
  return true;
}

int32_t Plugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                                const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept {
  try {
    std::string error;
    if (!check_nb_outputs(op_, nbOutputs, &error)) return fail(error), 1;
    if (in == nullptr || out == nullptr || nbInputs > kMaxTensors) return fail("configurePlugin without tensors"), 1;
    nvinfer1::Dims dims[kMaxTensors];
    int32_t dtypes[2 * kMaxTensors];
    for (int i = 0; i < nbInputs; ++i) dims[i] = in[i].desc.dims;
    Binding binding;
    if (!check_inputs(dims, nbInputs, &binding)) return 1;
    // only the dims (-1 where the profile varies) are checked here: the profile's min / max are
    // bounds TensorRT may derive per tensor, not dims that satisfy the op's equalities;
    // onShapeChange checks the real ones
    nb_inputs_ = nbInputs;
    for (int i = 0; i < nbInputs; ++i) dtypes[i] = static_cast<int32_t>(in[i].desc.type);
    for (int o = 0; o < nbOutputs; ++o) dtypes[nbInputs + o] = static_cast<int32_t>(out[o].desc.type);
    for (int pos = 0; pos < nbInputs + nbOutputs; ++pos) {
      const nvinfer1::TensorFormat format = pos < nbInputs ? in[pos].desc.format : out[pos - nbInputs].desc.format;
      if (!supports_dtype(op_, binding, pos, dtypes, format == nvinfer1::TensorFormat::kLINEAR, &error))
        return fail("unsupported tensor: " + error), 1;
      if (glue_.supports && !glue_.supports(op_, binding, pos, dtypes))
        return fail(std::string("unsupported tensor: the kernel does not take ") + tensor_name(op_, binding, pos) +
                    " in " + dtype_name(dtypes[pos]) + " with the other dtypes given"),
               1;
    }
    return upload_device_floats() ? 0 : 1;
  } catch (const std::exception& e) {
    return fail(std::string("configurePlugin failed: ") + e.what()), 1;
  }
}

int32_t Plugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                                   const nvinfer1::DataType* inputTypes, int32_t nbInputs) const noexcept {
  try {
    std::string error;
    Binding binding;
    if (!check_nb_outputs(op_, nbOutputs, &error) || !bind_inputs(op_, nbInputs, &binding, &error))
      return fail(error), 1;
    int32_t in[kMaxTensors], out[kMaxTensors];
    for (int i = 0; i < nbInputs; ++i) in[i] = static_cast<int32_t>(inputTypes[i]);
    if (!output_dtypes(op_, binding, in, out, &error)) return fail(error), 1;
    for (int o = 0; o < nbOutputs; ++o) outputTypes[o] = static_cast<nvinfer1::DataType>(out[o]);
    return 0;
  } catch (const std::exception& e) {
    return fail(std::string("getOutputDataTypes failed: ") + e.what()), 1;
  }
}

namespace {

// The IDimensionExpr of table expression `expr` over TensorRT's input expressions (actual order).
const nvinfer1::IDimensionExpr* build_expr(const OpTable& op, int32_t expr, const ParsedFields& fields,
                                           const Binding& binding, const nvinfer1::DimsExprs* inputs,
                                           nvinfer1::IExprBuilder& builder) {
  if (expr < 0 || expr >= op.nb_exprs) return nullptr;
  const DimExpr& e = op.exprs[expr];
  switch (e.kind) {
    case ExprKind::kInputDim: {
      const int32_t actual = binding.actual_of_spec[e.a];
      if (actual < 0) return nullptr;
      const nvinfer1::DimsExprs& dims = inputs[actual];
      const int j = e.b < 0 ? dims.nbDims + e.b : e.b;
      return (j >= 0 && j < dims.nbDims) ? dims.d[j] : nullptr;
    }
    case ExprKind::kField: return builder.constant(fields.at(e.a).i);
    case ExprKind::kConst: return builder.constant(e.value);
    default: break;
  }
  const nvinfer1::IDimensionExpr* a = build_expr(op, e.a, fields, binding, inputs, builder);
  const nvinfer1::IDimensionExpr* b = build_expr(op, e.b, fields, binding, inputs, builder);
  if (a == nullptr || b == nullptr) return nullptr;
  nvinfer1::DimensionOperation operation = nvinfer1::DimensionOperation::kSUM;
  switch (e.kind) {
    case ExprKind::kSum: operation = nvinfer1::DimensionOperation::kSUM; break;
    case ExprKind::kSub: operation = nvinfer1::DimensionOperation::kSUB; break;
    case ExprKind::kProd: operation = nvinfer1::DimensionOperation::kPROD; break;
    case ExprKind::kFloorDiv: operation = nvinfer1::DimensionOperation::kFLOOR_DIV; break;
    default: return nullptr;
  }
  return builder.operation(operation, *a, *b);
}

}  // namespace

int32_t Plugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                                const nvinfer1::DimsExprs* /*shapeInputs*/, int32_t nbShapeInputs,
                                nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                nvinfer1::IExprBuilder& exprBuilder) noexcept {
  try {
    std::string error;
    Binding binding;
    if (nbShapeInputs != 0) return fail("takes no shape inputs"), 1;
    if (!check_nb_outputs(op_, nbOutputs, &error) || !bind_inputs(op_, nbInputs, &binding, &error))
      return fail(error), 1;
    // the build-time constants among the dims are checked now, so that a wrong graph fails here
    nvinfer1::Dims known[kMaxTensors];
    for (int i = 0; i < nbInputs; ++i) {
      known[i].nbDims = inputs[i].nbDims;
      for (int j = 0; j < inputs[i].nbDims && j < kMaxRank; ++j)
        known[i].d[j] = inputs[i].d[j]->isConstant() ? inputs[i].d[j]->getConstantValue() : -1;
    }
    if (!check_inputs(known, nbInputs, &binding)) return 1;
    for (int o = 0; o < nbOutputs; ++o) {
      const TensorRule& t = op_.outputs[o];
      if (t.copy_dims_of >= 0) {
        outputs[o] = inputs[binding.actual_of_spec[t.copy_dims_of]];
        continue;
      }
      outputs[o].nbDims = t.rank;
      for (int j = 0; j < t.rank; ++j) {
        outputs[o].d[j] = build_expr(op_, t.dims[j], fields_, binding, inputs, exprBuilder);
        if (outputs[o].d[j] == nullptr) return fail(std::string("cannot express output ") + t.name + "'s shape"), 1;
      }
    }
    return 0;
  } catch (const std::exception& e) {
    return fail(std::string("getOutputShapes failed: ") + e.what()), 1;
  }
}

bool Plugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                       int32_t nbOutputs) noexcept {
  // TensorRT asks about many combinations while it searches: the answer is quiet, never logged
  Binding binding;
  if (inOut == nullptr || nbOutputs != op_.nb_outputs || !bind_inputs(op_, nbInputs, &binding, nullptr)) return false;
  if (pos < 0 || pos >= nbInputs + nbOutputs) return false;
  int32_t dtypes[2 * kMaxTensors];
  for (int k = 0; k <= pos; ++k) dtypes[k] = static_cast<int32_t>(inOut[k].desc.type);
  if (!supports_dtype(op_, binding, pos, dtypes, inOut[pos].desc.format == nvinfer1::TensorFormat::kLINEAR))
    return false;
  return glue_.supports == nullptr || glue_.supports(op_, binding, pos, dtypes);
}

int32_t Plugin::getNbOutputs() const noexcept { return op_.nb_outputs; }

size_t Plugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                const nvinfer1::DynamicPluginTensorDesc* /*outputs*/,
                                int32_t /*nbOutputs*/) const noexcept {
  if (glue_.workspace == nullptr) return 0;
  try {
    Binding binding;
    if (!bind_inputs(op_, nbInputs, &binding, nullptr)) return 0;
    // enough for the largest problem of the profile (TensorRT may run smaller ones with it)
    nvinfer1::Dims dims[kMaxTensors];
    for (int i = 0; i < nbInputs; ++i) dims[i] = inputs[i].max;
    Shape shapes[kMaxTensors];
    spec_shapes(op_, binding, dims, shapes);
    return glue_.workspace(op_, fields_, shapes);
  } catch (...) {
    return 0;
  }
}

const char* Plugin::getMetadataString() noexcept {
  try {
    std::ostringstream s;
    for (int k = 0; k < op_.nb_fields; ++k) {
      const FieldSpec& f = op_.fields[k];
      s << (k ? " " : "") << f.name << "=";
      if (f.kind == FieldKind::kInt) s << fields_.at(k).i;
      else if (f.kind == FieldKind::kFloat) s << fields_.at(k).f;
      else s << "[" << fields_.at(k).fs.size() << " values]";
    }
    metadata_ = s.str();
    return metadata_.c_str();
  } catch (...) {
    return nullptr;
  }
}

int32_t Plugin::onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
                              const nvinfer1::PluginTensorDesc* /*out*/, int32_t nbOutputs) noexcept {
  try {
    std::string error;
    if (!check_nb_outputs(op_, nbOutputs, &error)) return fail(error), 1;
    if (in == nullptr || nbInputs > kMaxTensors) return fail("onShapeChange without tensors"), 1;
    nvinfer1::Dims dims[kMaxTensors];
    for (int i = 0; i < nbInputs; ++i) dims[i] = in[i].dims;
    Binding binding;
    if (!check_inputs(dims, nbInputs, &binding)) return 1;
    nb_inputs_ = nbInputs;
    // outside enqueue, so that enqueue allocates nothing (it may be captured into a CUDA graph)
    return upload_device_floats() ? 0 : 1;
  } catch (const std::exception& e) {
    return fail(std::string("onShapeChange failed: ") + e.what()), 1;
  }
}

int32_t Plugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                        const void* const* inputs, void* const* outputs, void* workspace,
                        cudaStream_t stream) noexcept {
  try {
    if (glue_.launch == nullptr)
      return fail(std::string("this library has no CUDA kernel for ") + op_.name + " yet (plugins/" + op_.folder +
                  " registers no launcher)"),
             1;
    if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
      return fail("enqueue without tensors"), 1;
    // enqueue is not told how many inputs there are; configurePlugin / onShapeChange were
    int32_t nb_inputs = nb_inputs_;
    if (nb_inputs < 0) {
      int32_t required = 0;
      for (int i = 0; i < op_.nb_inputs; ++i) required += op_.inputs[i].optional ? 0 : 1;
      if (required != op_.nb_inputs) return fail("enqueue before configurePlugin / onShapeChange"), 1;
      nb_inputs = required;
    }
    Binding binding;
    std::string error;
    if (!bind_inputs(op_, nb_inputs, &binding, &error)) return fail(error), 1;
    if (!upload_device_floats()) return 1;
    LaunchArgs args;
    args.op = &op_;
    args.fields = &fields_;
    args.device_floats = device_floats_.data();
    for (int i = 0; i < op_.nb_inputs; ++i) {
      const int32_t actual = binding.actual_of_spec[i];
      if (actual < 0) continue;
      args.inputs[i].data = const_cast<void*>(inputs[actual]);
      args.inputs[i].dtype = static_cast<int32_t>(inputDesc[actual].type);
      args.inputs[i].shape = shape_of(inputDesc[actual].dims);
    }
    for (int o = 0; o < op_.nb_outputs; ++o) {
      args.outputs[o].data = outputs[o];
      args.outputs[o].dtype = static_cast<int32_t>(outputDesc[o].type);
      args.outputs[o].shape = shape_of(outputDesc[o].dims);
    }
    args.workspace = workspace;
    args.stream = stream;
    const std::string launch_error = glue_.launch(args);
    if (!launch_error.empty()) return fail(launch_error), 1;
    return 0;
  } catch (const std::exception& e) {
    return fail(std::string("enqueue failed: ") + e.what()), 1;
  }
}

nvinfer1::IPluginV3* Plugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept {
  return clone();
}

const nvinfer1::PluginFieldCollection* Plugin::getFieldsToSerialize() noexcept {
  try {
    serialized_.clear();
    for (const RawField& f : serialize_fields(fields_))
      serialized_.emplace_back(f.name, f.data, static_cast<nvinfer1::PluginFieldType>(f.type), f.length);
    serialized_collection_.nbFields = static_cast<int32_t>(serialized_.size());
    serialized_collection_.fields = serialized_.data();
    return &serialized_collection_;
  } catch (const std::exception& e) {
    fail(std::string("getFieldsToSerialize failed: ") + e.what());
    return nullptr;
  }
}

// ---- Creator --------------------------------------------------------------------------------------

Creator::Creator(const OpGlue& glue) : glue_(glue) {
  const OpTable& op = *glue.op;
  for (int k = 0; k < op.nb_fields; ++k) {
    const FieldSpec& f = op.fields[k];
    const auto type = f.kind == FieldKind::kInt ? nvinfer1::PluginFieldType::kINT32 : nvinfer1::PluginFieldType::kFLOAT32;
    // the ONNX parser reads the node's attribute of each name listed here (and only those)
    field_names_.emplace_back(f.name, nullptr, type, f.kind == FieldKind::kFloats ? 0 : 1);
  }
  field_collection_.nbFields = static_cast<int32_t>(field_names_.size());
  field_collection_.fields = field_names_.data();
}

nvinfer1::IPluginV3* Creator::createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                           nvinfer1::TensorRTPhase /*phase*/) noexcept {
  try {
    const OpTable& op = *glue_.op;
    const std::string layer = name ? name : "";
    std::vector<RawField> raw;
    if (fc != nullptr) {
      if (fc->nbFields < 0 || (fc->nbFields > 0 && fc->fields == nullptr)) {
        report_error(layer + " (" + op.name + "): the field collection is malformed");
        return nullptr;
      }
      for (int32_t n = 0; n < fc->nbFields; ++n) {
        const nvinfer1::PluginField& f = fc->fields[n];
        raw.push_back({f.name, f.data, static_cast<RawType>(f.type), f.length});
      }
    }
    ParsedFields fields;
    std::string error;
    if (!parse_fields(op, raw.data(), static_cast<int32_t>(raw.size()), &fields, &error)) {
      report_error(layer.empty() ? error : layer + ": " + error);
      return nullptr;
    }
    return new Plugin(glue_, std::move(fields), layer);
  } catch (const std::exception& e) {
    report_error(std::string(glue_.op->name) + ": createPlugin failed: " + e.what());
    return nullptr;
  }
}

const nvinfer1::PluginFieldCollection* Creator::getFieldNames() noexcept { return &field_collection_; }
const char* Creator::getPluginName() const noexcept { return glue_.op->name; }
const char* Creator::getPluginVersion() const noexcept { return kPluginVersion; }
const char* Creator::getPluginNamespace() const noexcept { return kPluginNamespace; }

}  // namespace trt
}  // namespace jm
