// Test driver for libjetmamba_plugins.so: plays TensorRT's part without TensorRT.
//
// Built (with the host compiler, against TensorRT's public headers and the CUDA emulator's
// <cuda_runtime_api.h>) into a small shared library that tests/plugins/test_trt_plugins.py loads
// with ctypes. It dlopen()s the plugin library as TensorRT's IPluginRegistry::loadLibrary does,
// looks up getCreators / setLoggerFinder, and drives creators and plugins through the IPluginV3
// interfaces only: a logger finder that records messages, an IExprBuilder whose expressions are
// text ("b", "(x2//4)") folded where constant, a resource context for attachToContext. Results
// come back to Python as JSON text.
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include "NvInferRuntime.h"
#pragma GCC diagnostic pop

namespace nv = nvinfer1;

namespace {

using GetCreatorsFn = nv::IPluginCreatorInterface* const* (*)(int32_t&);
using SetLoggerFinderFn = void (*)(nv::ILoggerFinder*);
using LastErrorFn = const char* (*)();

std::string g_error;     // the driver's own last error (drv_error)
std::string g_result;    // the JSON text of the last call that returns one
void* g_library = nullptr;
GetCreatorsFn g_get_creators = nullptr;
LastErrorFn g_last_error = nullptr;

std::string json_string(const char* s) {
  std::string out = "\"";
  for (const char* p = s ? s : ""; *p; ++p) {
    const unsigned char c = static_cast<unsigned char>(*p);
    if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);  // 9 digits: every float32 reads back exactly
  return buf;
}

const char* result(std::string text) {
  g_result = std::move(text);
  return g_result.c_str();
}

// ---- logger ---------------------------------------------------------------------------------------

class RecordingLogger : public nv::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    messages.emplace_back(std::to_string(static_cast<int>(severity)) + ":" + (msg ? msg : ""));
  }
  std::vector<std::string> messages;
};

class TestLoggerFinder : public nv::ILoggerFinder {
 public:
  nv::ILogger* findLogger() override { return &logger; }
  RecordingLogger logger;
};

TestLoggerFinder g_finder;

// ---- IExprBuilder ---------------------------------------------------------------------------------
// TensorRT's IDimensionExpr / IExprBuilder forward to implementation objects (apiv::V...); the test
// supplies those, as TensorRT's builder does.

class TextExprImpl : public nv::apiv::VDimensionExpr {
 public:
  TextExprImpl(std::string text, bool constant, int64_t value) : text(std::move(text)), constant(constant), value(value) {}
  bool isConstant() const override { return constant; }
  int64_t getConstantValue() const override { return constant ? value : INT64_MIN; }
  bool isSizeTensor() const override { return false; }
  std::string text;
  bool constant;
  int64_t value;
};

class TextExpr : public nv::IDimensionExpr {
 public:
  explicit TextExpr(TextExprImpl* impl) : impl_(impl) { mImpl = impl; }
  ~TextExpr() noexcept override = default;
  const TextExprImpl& impl() const { return *impl_; }

 private:
  std::unique_ptr<TextExprImpl> impl_;
};

class TextBuilderImpl : public nv::apiv::VExprBuilder {
 public:
  const nv::IDimensionExpr* make(std::string text, bool constant, int64_t value) {
    auto e = std::make_unique<TextExpr>(new TextExprImpl(std::move(text), constant, value));
    const nv::IDimensionExpr* p = e.get();
    by_pointer[p] = e.get();
    owned.push_back(std::move(e));
    return p;
  }
  const nv::IDimensionExpr* constant(int64_t value) override {
    ++constants;
    return make(std::to_string(value), true, value);
  }
  const nv::IDimensionExpr* operation(nv::DimensionOperation op, const nv::IDimensionExpr& first,
                                      const nv::IDimensionExpr& second) override {
    ++operations;
    auto a = by_pointer.find(&first), b = by_pointer.find(&second);
    if (a == by_pointer.end() || b == by_pointer.end()) return nullptr;  // not ours: the plugin made it up
    const TextExprImpl& x = a->second->impl();
    const TextExprImpl& y = b->second->impl();
    const char* symbol = nullptr;
    int64_t v = 0;
    switch (op) {
      case nv::DimensionOperation::kSUM: symbol = "+"; v = x.value + y.value; break;
      case nv::DimensionOperation::kSUB: symbol = "-"; v = x.value - y.value; break;
      case nv::DimensionOperation::kPROD: symbol = "*"; v = x.value * y.value; break;
      case nv::DimensionOperation::kFLOOR_DIV: symbol = "//"; v = y.value ? x.value / y.value : 0; break;
      case nv::DimensionOperation::kCEIL_DIV: symbol = "/^"; v = y.value ? (x.value + y.value - 1) / y.value : 0; break;
      case nv::DimensionOperation::kMAX: symbol = " max "; v = x.value > y.value ? x.value : y.value; break;
      case nv::DimensionOperation::kMIN: symbol = " min "; v = x.value < y.value ? x.value : y.value; break;
      default: return nullptr;
    }
    if (x.constant && y.constant) return make(std::to_string(v), true, v);
    return make("(" + x.text + symbol + y.text + ")", false, 0);
  }
  const nv::IDimensionExpr* declareSizeTensor(int32_t, const nv::IDimensionExpr&, const nv::IDimensionExpr&) override {
    return nullptr;
  }
  std::string text_of(const nv::IDimensionExpr* e) const {
    auto it = by_pointer.find(e);
    return it == by_pointer.end() ? "<foreign>" : it->second->impl().text;
  }

  std::vector<std::unique_ptr<TextExpr>> owned;
  std::map<const nv::IDimensionExpr*, TextExpr*> by_pointer;
  int constants = 0;
  int operations = 0;
};

class TextBuilder : public nv::IExprBuilder {
 public:
  TextBuilder() { mImpl = &impl; }
  ~TextBuilder() noexcept override = default;
  TextBuilderImpl impl;
};

// ---- attachToContext ------------------------------------------------------------------------------

class TestResourceContext : public nv::IPluginResourceContext {
 public:
  nv::IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
  nv::IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
};

// ---- helpers --------------------------------------------------------------------------------------

nv::IPluginCreatorV3One* find_creator(const char* name) {
  if (!g_get_creators) return nullptr;
  int32_t n = 0;
  nv::IPluginCreatorInterface* const* creators = g_get_creators(n);
  for (int32_t i = 0; i < n; ++i) {
    if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0) continue;
    auto* c = static_cast<nv::IPluginCreatorV3One*>(creators[i]);
    if (std::strcmp(c->getPluginName(), name) == 0) return c;
  }
  return nullptr;
}

template <class T>
T* capability(nv::IPluginV3* plugin, nv::PluginCapabilityType type) {
  return static_cast<T*>(plugin->getCapabilityInterface(type));
}
nv::IPluginV3OneCore* core(nv::IPluginV3* p) { return capability<nv::IPluginV3OneCore>(p, nv::PluginCapabilityType::kCORE); }
nv::IPluginV3OneBuild* build(nv::IPluginV3* p) { return capability<nv::IPluginV3OneBuild>(p, nv::PluginCapabilityType::kBUILD); }
nv::IPluginV3OneRuntime* runtime(nv::IPluginV3* p) {
  return capability<nv::IPluginV3OneRuntime>(p, nv::PluginCapabilityType::kRUNTIME);
}

std::string interface_json(const nv::InterfaceInfo& info) {
  return "{\"kind\": " + json_string(info.kind) + ", \"major\": " + std::to_string(info.major) +
         ", \"minor\": " + std::to_string(info.minor) + "}";
}

std::string fields_json(const nv::PluginFieldCollection* fc) {
  if (fc == nullptr) return "null";
  std::ostringstream s;
  s << "[";
  for (int32_t k = 0; k < fc->nbFields; ++k) {
    const nv::PluginField& f = fc->fields[k];
    s << (k ? ", " : "") << "{\"name\": " << json_string(f.name) << ", \"type\": " << static_cast<int>(f.type)
      << ", \"length\": " << f.length << ", \"values\": [";
    for (int32_t e = 0; f.data && e < f.length; ++e) {
      double v = 0;
      if (f.type == nv::PluginFieldType::kFLOAT32) v = static_cast<const float*>(f.data)[e];
      else if (f.type == nv::PluginFieldType::kINT32) v = static_cast<const int32_t*>(f.data)[e];
      s << (e ? ", " : "") << json_number(v);
    }
    s << "]}";
  }
  s << "]";
  return s.str();
}

// Tensors from Python: count, dtypes, ranks, dims (kMaxDims per tensor, row-major).
struct Tensors {
  int32_t n;
  const int32_t* types;
  const int32_t* formats;  // nullptr: all linear
  const int32_t* ranks;
  const int64_t* dims;
  nv::Dims dims_of(int i) const {
    nv::Dims d{};
    d.nbDims = ranks[i];
    for (int j = 0; j < ranks[i] && j < nv::Dims::MAX_DIMS; ++j) d.d[j] = dims[i * nv::Dims::MAX_DIMS + j];
    return d;
  }
  nv::PluginTensorDesc desc(int i) const {
    nv::PluginTensorDesc d{};
    d.dims = dims_of(i);
    d.type = static_cast<nv::DataType>(types[i]);
    d.format = formats ? static_cast<nv::TensorFormat>(formats[i]) : nv::TensorFormat::kLINEAR;
    d.scale = 1.0f;
    return d;
  }
  nv::DynamicPluginTensorDesc dynamic(int i) const {
    nv::DynamicPluginTensorDesc d{};
    d.desc = desc(i);
    d.min = d.opt = d.max = d.desc.dims;
    return d;
  }
};

}  // namespace

extern "C" {

const char* drv_error() { return g_error.c_str(); }

// dlopen the plugin library and find its entry points, as TensorRT's loadLibrary does.
int drv_open(const char* path) {
  g_library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!g_library) return g_error = dlerror(), -1;
  g_get_creators = reinterpret_cast<GetCreatorsFn>(dlsym(g_library, "getCreators"));
  auto set_finder = reinterpret_cast<SetLoggerFinderFn>(dlsym(g_library, "setLoggerFinder"));
  g_last_error = reinterpret_cast<LastErrorFn>(dlsym(g_library, "jm_trt_last_error"));
  if (!g_get_creators || !set_finder) return g_error = "getCreators or setLoggerFinder is not exported", -1;
  set_finder(&g_finder);
  return 0;
}

const char* drv_library_error() { return g_last_error ? g_last_error() : ""; }

const char* drv_log() {
  std::string s = "[";
  for (size_t i = 0; i < g_finder.logger.messages.size(); ++i) s += (i ? ", " : "") + json_string(g_finder.logger.messages[i].c_str());
  return result(s + "]");
}
void drv_clear_log() { g_finder.logger.messages.clear(); }

// Every creator: interface, name, version, namespace, getFieldNames.
const char* drv_creators() {
  int32_t n = -1;
  nv::IPluginCreatorInterface* const* creators = g_get_creators ? g_get_creators(n) : nullptr;
  std::ostringstream s;
  s << "[";
  for (int32_t i = 0; creators && i < n; ++i) {
    const nv::InterfaceInfo info = creators[i]->getInterfaceInfo();
    s << (i ? ", " : "") << "{\"interface\": " << interface_json(info);
    if (std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0) {
      auto* c = static_cast<nv::IPluginCreatorV3One*>(creators[i]);
      s << ", \"name\": " << json_string(c->getPluginName()) << ", \"version\": " << json_string(c->getPluginVersion())
        << ", \"namespace\": " << json_string(c->getPluginNamespace()) << ", \"fields\": " << fields_json(c->getFieldNames());
    }
    s << "}";
  }
  s << "]";
  return result(s.str());
}

// createPlugin with fields given as parallel arrays (types are PluginFieldType values).
void* drv_create(const char* op, const char* layer, int32_t nb_fields, const char* const* names, const int32_t* types,
                 const void* const* data, const int32_t* lengths, int32_t phase) {
  nv::IPluginCreatorV3One* creator = find_creator(op);
  if (!creator) return g_error = std::string("no creator named ") + op, nullptr;
  std::vector<nv::PluginField> fields;
  for (int32_t k = 0; k < nb_fields; ++k)
    fields.emplace_back(names[k], data[k], static_cast<nv::PluginFieldType>(types[k]), lengths[k]);
  nv::PluginFieldCollection fc{nb_fields, fields.data()};
  return creator->createPlugin(layer, &fc, static_cast<nv::TensorRTPhase>(phase));
}

void drv_destroy(void* plugin) { delete static_cast<nv::IPluginV3*>(plugin); }

// The plugin's capabilities and core facts.
const char* drv_info(void* handle) {
  auto* plugin = static_cast<nv::IPluginV3*>(handle);
  std::ostringstream s;
  s << "{\"interface\": " << interface_json(plugin->getInterfaceInfo());
  const char* names[] = {"core", "build", "runtime"};
  for (int t = 0; t < 3; ++t) {
    nv::IPluginCapability* cap = plugin->getCapabilityInterface(static_cast<nv::PluginCapabilityType>(t));
    s << ", \"" << names[t] << "\": " << (cap ? interface_json(cap->getInterfaceInfo()) : "null");
  }
  nv::IPluginV3OneCore* c = core(plugin);
  nv::IPluginV3OneBuild* b = build(plugin);
  s << ", \"name\": " << json_string(c->getPluginName()) << ", \"version\": " << json_string(c->getPluginVersion())
    << ", \"namespace\": " << json_string(c->getPluginNamespace()) << ", \"nb_outputs\": " << b->getNbOutputs()
    << ", \"metadata\": " << json_string(b->getMetadataString()) << "}";
  return result(s.str());
}

const char* drv_serialize(void* handle) { return result(fields_json(runtime(static_cast<nv::IPluginV3*>(handle))->getFieldsToSerialize())); }

// createPlugin(kRUNTIME) from the plugin's getFieldsToSerialize, as engine deserialisation does.
void* drv_recreate(void* handle, const char* op) {
  nv::IPluginCreatorV3One* creator = find_creator(op);
  const nv::PluginFieldCollection* fc = runtime(static_cast<nv::IPluginV3*>(handle))->getFieldsToSerialize();
  if (!creator || !fc) return nullptr;
  return creator->createPlugin("recreated", fc, nv::TensorRTPhase::kRUNTIME);
}

void* drv_clone(void* handle) { return static_cast<nv::IPluginV3*>(handle)->clone(); }

void* drv_attach(void* handle) {
  static TestResourceContext context;
  return runtime(static_cast<nv::IPluginV3*>(handle))->attachToContext(&context);
}

// getOutputShapes: dims are text, an integer for a build-time constant, else a symbol.
const char* drv_output_shapes(void* handle, int32_t nb_inputs, const int32_t* ranks, const char* const* dims,
                              int32_t nb_outputs) {
  TextBuilder builder;
  std::vector<nv::DimsExprs> inputs(nb_inputs);
  int k = 0;
  for (int32_t i = 0; i < nb_inputs; ++i) {
    inputs[i].nbDims = ranks[i];
    for (int32_t j = 0; j < ranks[i]; ++j, ++k) {
      char* end = nullptr;
      const long long v = std::strtoll(dims[k], &end, 10);
      inputs[i].d[j] = (end && *end == '\0' && end != dims[k]) ? builder.impl.make(dims[k], true, v)
                                                               : builder.impl.make(dims[k], false, 0);
    }
  }
  const int before_constants = builder.impl.constants, before_operations = builder.impl.operations;
  std::vector<nv::DimsExprs> outputs(nb_outputs > 0 ? nb_outputs : 1);
  const int32_t rc = build(static_cast<nv::IPluginV3*>(handle))
                         ->getOutputShapes(inputs.data(), nb_inputs, nullptr, 0, outputs.data(), nb_outputs, builder);
  std::ostringstream s;
  s << "{\"rc\": " << rc << ", \"operations\": " << builder.impl.operations - before_operations
    << ", \"constants\": " << builder.impl.constants - before_constants << ", \"outputs\": [";
  for (int32_t o = 0; rc == 0 && o < nb_outputs; ++o) {
    s << (o ? ", " : "") << "[";
    for (int32_t j = 0; j < outputs[o].nbDims; ++j)
      s << (j ? ", " : "") << json_string(builder.impl.text_of(outputs[o].d[j]).c_str());
    s << "]";
  }
  s << "]}";
  return result(s.str());
}

const char* drv_output_types(void* handle, int32_t nb_inputs, const int32_t* input_types, int32_t nb_outputs) {
  std::vector<nv::DataType> in(nb_inputs), out(nb_outputs > 0 ? nb_outputs : 1, nv::DataType::kBOOL);
  for (int32_t i = 0; i < nb_inputs; ++i) in[i] = static_cast<nv::DataType>(input_types[i]);
  const int32_t rc = build(static_cast<nv::IPluginV3*>(handle))->getOutputDataTypes(out.data(), nb_outputs, in.data(), nb_inputs);
  std::string s = "{\"rc\": " + std::to_string(rc) + ", \"types\": [";
  for (int32_t o = 0; rc == 0 && o < nb_outputs; ++o) s += (o ? ", " : "") + std::to_string(static_cast<int>(out[o]));
  return result(s + "]}");
}

// supportsFormatCombination for tensor `pos` of inputs then outputs (types / formats per tensor).
int32_t drv_supports(void* handle, int32_t pos, int32_t nb_inputs, int32_t nb_outputs, const int32_t* types,
                     const int32_t* formats) {
  std::vector<nv::DynamicPluginTensorDesc> in_out(nb_inputs + nb_outputs);
  for (int32_t k = 0; k < nb_inputs + nb_outputs; ++k) {
    in_out[k].desc.type = static_cast<nv::DataType>(types[k]);
    in_out[k].desc.format = static_cast<nv::TensorFormat>(formats[k]);
  }
  return build(static_cast<nv::IPluginV3*>(handle))->supportsFormatCombination(pos, in_out.data(), nb_inputs, nb_outputs);
}

int32_t drv_configure(void* handle, int32_t nb_in, const int32_t* in_types, const int32_t* in_ranks,
                      const int64_t* in_dims, int32_t nb_out, const int32_t* out_types, const int32_t* out_ranks,
                      const int64_t* out_dims) {
  Tensors in{nb_in, in_types, nullptr, in_ranks, in_dims}, out{nb_out, out_types, nullptr, out_ranks, out_dims};
  std::vector<nv::DynamicPluginTensorDesc> i(nb_in), o(nb_out);
  for (int k = 0; k < nb_in; ++k) i[k] = in.dynamic(k);
  for (int k = 0; k < nb_out; ++k) o[k] = out.dynamic(k);
  return build(static_cast<nv::IPluginV3*>(handle))->configurePlugin(i.data(), nb_in, o.data(), nb_out);
}

int64_t drv_workspace(void* handle, int32_t nb_in, const int32_t* in_types, const int32_t* in_ranks,
                      const int64_t* in_dims, int32_t nb_out, const int32_t* out_types, const int32_t* out_ranks,
                      const int64_t* out_dims) {
  Tensors in{nb_in, in_types, nullptr, in_ranks, in_dims}, out{nb_out, out_types, nullptr, out_ranks, out_dims};
  std::vector<nv::DynamicPluginTensorDesc> i(nb_in), o(nb_out);
  for (int k = 0; k < nb_in; ++k) i[k] = in.dynamic(k);
  for (int k = 0; k < nb_out; ++k) o[k] = out.dynamic(k);
  return static_cast<int64_t>(build(static_cast<nv::IPluginV3*>(handle))->getWorkspaceSize(i.data(), nb_in, o.data(), nb_out));
}

int32_t drv_shape_change(void* handle, int32_t nb_in, const int32_t* in_types, const int32_t* in_ranks,
                         const int64_t* in_dims, int32_t nb_out, const int32_t* out_types, const int32_t* out_ranks,
                         const int64_t* out_dims) {
  Tensors in{nb_in, in_types, nullptr, in_ranks, in_dims}, out{nb_out, out_types, nullptr, out_ranks, out_dims};
  std::vector<nv::PluginTensorDesc> i(nb_in), o(nb_out);
  for (int k = 0; k < nb_in; ++k) i[k] = in.desc(k);
  for (int k = 0; k < nb_out; ++k) o[k] = out.desc(k);
  return runtime(static_cast<nv::IPluginV3*>(handle))->onShapeChange(i.data(), nb_in, o.data(), nb_out);
}

// enqueue on the emulator's default stream; device memory is host memory there.
int32_t drv_enqueue(void* handle, int32_t nb_in, const int32_t* in_types, const int32_t* in_ranks,
                    const int64_t* in_dims, const void* const* in_data, int32_t nb_out, const int32_t* out_types,
                    const int32_t* out_ranks, const int64_t* out_dims, void* const* out_data, void* workspace) {
  Tensors in{nb_in, in_types, nullptr, in_ranks, in_dims}, out{nb_out, out_types, nullptr, out_ranks, out_dims};
  std::vector<nv::PluginTensorDesc> i(nb_in), o(nb_out);
  for (int k = 0; k < nb_in; ++k) i[k] = in.desc(k);
  for (int k = 0; k < nb_out; ++k) o[k] = out.desc(k);
  return runtime(static_cast<nv::IPluginV3*>(handle))->enqueue(i.data(), o.data(), in_data, out_data, workspace, nullptr);
}

}  // extern "C"
