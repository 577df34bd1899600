// The TensorRT-free half of jetmamba's plugins: what an op accepts and computes, as plain data and
// plain functions on integers, so that it is testable (and tested) without TensorRT or a GPU.
//
// Every op is described by an OpTable generated from the op spec (trt_ops.h, written by
// `python -m jetmamba.plugins.gen_trt_ops`): its fields (the ONNX attributes), its tensors (dtype
// sets, symbolic shapes as dimension expressions), the dimension checks between its inputs and the
// limits of its kernels. The functions below interpret a table: parse and serialise fields, compute
// output shapes and dtypes, say which dtype combinations are supported. The TensorRT glue
// (trt_plugin.h) converts TensorRT's types to these and back; the per-op glue
// (plugins/<op>/<op>_plugin.cpp) fills a kernel's params from a LaunchArgs.
//
// Tensor numbering: "spec order" is the order of the spec's inputs. TensorRT's ONNX parser passes
// the present inputs only (the compiler drops an absent optional input), so the glue maps the
// "actual" positions TensorRT uses to spec indices with a Binding (an op has one optional input at
// most, so the count decides).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace jm {
namespace trt {

constexpr int kMaxRank = 8;      // TensorRT's Dims::MAX_DIMS
constexpr int kMaxTensors = 16;  // inputs or outputs of one op
constexpr int kMaxFields = 16;
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- dtypes ---------------------------------------------------------------------------------------
// Numbered as TensorRT's DataType (kFLOAT = 0, kHALF = 1, kINT8 = 2, kUINT8 = 5; the glue
// static_asserts it), so that any other TensorRT type keeps its own number and matches no mask below.
enum class Dtype : int32_t { kFloat = 0, kHalf = 1, kInt8 = 2, kUInt8 = 5 };
using DtypeMask = uint32_t;
constexpr DtypeMask kF32 = 1u << 0;
constexpr DtypeMask kF16 = 1u << 1;
constexpr DtypeMask kI8 = 1u << 2;
constexpr DtypeMask kU8 = 1u << 5;  // packed int4 weights (two codes a byte)
// The mask bit of a dtype number; 0 for a number that is none of ours.
constexpr DtypeMask dtype_bit(int32_t dtype) { return (dtype >= 0 && dtype <= 2) || dtype == 5 ? 1u << dtype : 0u; }
const char* dtype_name(int32_t dtype);

// ---- fields ---------------------------------------------------------------------------------------
enum class FieldKind : int32_t { kFloat = 0, kFloats = 1, kInt = 2 };

struct FieldSpec {
  const char* name;
  FieldKind kind;
  bool required;  // no default
  bool has_minimum;
  double minimum;  // inclusive; every element of a kFloats field
  bool has_maximum;
  double maximum;
  bool finite;           // false: +-inf allowed (dt_max = inf means "no bound")
  double default_value;  // when !required (kInt: an integral value)
  int32_t length_expr;   // kFloats: expression of the per-channel count (the length is 1 or that); -1: any
  const char* doc;
};

// Field value types, numbered as TensorRT's PluginFieldType (the glue static_asserts it).
enum class RawType : int32_t {
  kFloat16 = 0,
  kFloat32 = 1,
  kFloat64 = 2,
  kInt8 = 3,
  kInt16 = 4,
  kInt32 = 5,
  kChar = 6,
  kDims = 7,
  kUnknown = 8,
  kBF16 = 9,
  kInt64 = 10,
};
const char* raw_type_name(RawType type);

// A field as TensorRT hands it over (PluginField without TensorRT's type).
struct RawField {
  const char* name;
  const void* data;
  RawType type;
  int32_t length;
};

// ---- shapes ---------------------------------------------------------------------------------------
// A dimension expression node; an op's nodes form one array, operands are indices into it.
enum class ExprKind : int32_t {
  kInputDim = 0,  // dimension b of spec input a (b < 0: from the end, for "[..., n]" shapes)
  kField = 1,     // the value of int field a
  kConst = 2,     // value
  kSum = 3,       // node a + node b
  kSub = 4,       // node a - node b
  kProd = 5,      // node a * node b
  kFloorDiv = 6,  // node a / node b, rounded down
};
struct DimExpr {
  ExprKind kind;
  int32_t a;
  int32_t b;
  int64_t value;
};

struct TensorRule {
  const char* name;
  DtypeMask dtypes;
  bool optional;  // inputs only
  int32_t rank;   // exact rank; -1: "[..., n]", at least min_rank
  int32_t min_rank;
  // inputs: the spec input whose dtype this one must have (the graph's float type), -1: any of
  // `dtypes`; outputs: the spec input whose dtype this output has, -1: the single dtype of `dtypes`.
  int32_t same_dtype_as;
  const char* shape;  // symbolic, as the spec writes it
  // outputs: the spec input whose dims this output has, -1: `dims` gives one expression per axis
  int32_t copy_dims_of;
  int32_t dims[kMaxRank];
};

struct DimCheck {  // inputs[input].dims[dim] (dim < 0: from the end) must equal expression `expr`
  int32_t input;
  int32_t dim;
  int32_t expr;
};

struct LimitRule {  // what the kernels can run: the value of `expr` must be one of `allowed`
  int32_t expr;
  int32_t gate_field;  // int field that switches the limit on (when non-zero), -1: always on
  const int64_t* allowed;
  int32_t nb_allowed;
  const char* doc;
};

struct OpTable {
  const char* name;    // plugin name = ONNX op_type
  const char* folder;  // plugins/<folder>/
  const char* doc;
  const FieldSpec* fields;
  int32_t nb_fields;
  const TensorRule* inputs;
  int32_t nb_inputs;
  const TensorRule* outputs;
  int32_t nb_outputs;
  const DimExpr* exprs;
  int32_t nb_exprs;
  const DimCheck* checks;
  int32_t nb_checks;
  const LimitRule* limits;
  int32_t nb_limits;
};

// Dims of one tensor; -1 for a dimension not known yet (TensorRT's build-time wildcard). rank -1:
// an absent optional input.
struct Shape {
  int32_t rank = -1;
  int64_t d[kMaxRank] = {};
};

// ---- parsed fields --------------------------------------------------------------------------------
struct FieldValue {
  float f = 0.0f;          // kFloat
  int32_t i = 0;           // kInt
  std::vector<float> fs;   // kFloats
};

class ParsedFields {
 public:
  ParsedFields() = default;
  explicit ParsedFields(const OpTable* op) : op_(op), values_(op ? op->nb_fields : 0) {}

  const OpTable* op() const { return op_; }
  int size() const { return static_cast<int>(values_.size()); }
  const FieldValue& at(int index) const { return values_[index]; }
  FieldValue& at(int index) { return values_[index]; }
  int index_of(const char* name) const;  // -1 if the op has no such field
  float get_float(const char* name) const;
  int32_t get_int(const char* name) const;
  const std::vector<float>& get_floats(const char* name) const;

  // Bitwise equality of every value (a NaN never gets here; +-0 differ, as their bits do).
  bool operator==(const ParsedFields& other) const;
  bool operator!=(const ParsedFields& other) const { return !(*this == other); }

 private:
  const OpTable* op_ = nullptr;
  std::vector<FieldValue> values_;
};

// Parse the fields TensorRT passes to createPlugin: every required field once, optional ones
// default. kFloat fields accept kFLOAT32 / kFLOAT64 of length 1, kFloats fields kFLOAT32 /
// kFLOAT64 of length >= 1, kInt fields kINT8/16/32/64 of length 1. On failure, false and `error`
// names the op, the field and what is wrong (unknown, duplicate, missing, type, length, not finite,
// out of range).
bool parse_fields(const OpTable& op, const RawField* fields, int32_t nb_fields, ParsedFields* out,
                  std::string* error);

// Every field with its value (defaults included) as kFLOAT32 / kINT32 RawFields that point into
// `fields` (valid while it lives unchanged); parse_fields() of them gives back equal fields.
std::vector<RawField> serialize_fields(const ParsedFields& fields);

// ---- inputs as TensorRT numbers them ------------------------------------------------------------
struct Binding {
  int32_t nb_actual = 0;
  int32_t spec_of_actual[kMaxTensors] = {};  // actual input position -> spec index
  int32_t actual_of_spec[kMaxTensors] = {};  // spec index -> actual position, -1 when absent
};
bool bind_inputs(const OpTable& op, int32_t nb_inputs, Binding* binding, std::string* error);
bool check_nb_outputs(const OpTable& op, int32_t nb_outputs, std::string* error);

// ---- shapes ---------------------------------------------------------------------------------------
// The value of expression `expr` for these input shapes (spec order) and fields; -1 when it
// depends on an unknown dimension or an absent input, or divides by zero.
int64_t eval_expr(const OpTable& op, int32_t expr, const Shape* inputs, const ParsedFields& fields);

// Ranks, dimension checks, per-channel field lengths and kernel limits; dimensions that are -1
// are not checked yet. Inputs in spec order (an absent optional input has rank -1).
bool check_shapes(const OpTable& op, const ParsedFields& fields, const Shape* inputs, std::string* error);

// Every output's shape (unknown dimensions stay -1); false if an input has the wrong rank.
bool output_shapes(const OpTable& op, const ParsedFields& fields, const Shape* inputs, Shape* outputs,
                   std::string* error);

// ---- dtypes ---------------------------------------------------------------------------------------
// Output dtypes from the input dtypes (actual numbering); false if a dtype an output takes over
// is not one that output can have.
bool output_dtypes(const OpTable& op, const Binding& binding, const int32_t* input_dtypes, int32_t* output_dtypes,
                   std::string* error);

// TensorRT's supportsFormatCombination: is tensor `pos` (inputs 0..nb_actual-1, then outputs) fine
// with dtype dtypes[pos] in linear format (or not), given the choices already made for 0..pos-1?
bool supports_dtype(const OpTable& op, const Binding& binding, int32_t pos, const int32_t* dtypes, bool linear_format,
                    std::string* why = nullptr);

// ---- running an op --------------------------------------------------------------------------------
struct TensorArg {
  void* data = nullptr;  // device memory; nullptr for an absent optional input
  int32_t dtype = -1;
  Shape shape;
};

// What a per-op launcher gets: tensors in spec order, parsed fields and device copies of the
// kFloats fields (per-channel scales live on the device, as kernels read them).
struct LaunchArgs {
  const OpTable* op = nullptr;
  const ParsedFields* fields = nullptr;
  const float* const* device_floats = nullptr;  // by field index; nullptr for other kinds
  TensorArg inputs[kMaxTensors];
  TensorArg outputs[kMaxTensors];
  void* workspace = nullptr;
  void* stream = nullptr;  // cudaStream_t
};

// A launcher returns "" on success, else why it failed (the CUDA error included).
using LaunchFn = std::string (*)(const LaunchArgs& args);
// Workspace bytes for these input shapes (spec order); none when the glue has no WorkspaceFn.
using WorkspaceFn = size_t (*)(const OpTable& op, const ParsedFields& fields, const Shape* inputs);
// A kernel narrower than the spec about dtypes: false rejects dtypes[pos] (numbering as
// supports_dtype), after the table's own rules accepted it.
using SupportsFn = bool (*)(const OpTable& op, const Binding& binding, int32_t pos, const int32_t* dtypes);
// A kernel narrower than the spec about shapes or fields: "" or why not. Dimensions may be -1
// (unknown at build time): check only what is known.
using CheckFn = std::string (*)(const OpTable& op, const ParsedFields& fields, const Shape* inputs);

// What an op folder contributes: its table and, where its kernel exists, the launcher and the
// kernel's own restrictions. Members left out are nullptr.
struct OpGlue {
  const OpTable* op = nullptr;
  LaunchFn launch = nullptr;        // nullptr: no kernel yet (enqueue fails and says so)
  WorkspaceFn workspace = nullptr;  // nullptr: no workspace
  SupportsFn supports = nullptr;    // nullptr: the table's dtype rules are the kernel's
  CheckFn check = nullptr;          // nullptr: the table's shape rules are the kernel's
};

// Helpers for launchers and hooks.
// "" for CUDA's success (0), else "<launcher>: <message>".
std::string cuda_status(const char* launcher, int code, const char* message);
// The spec input of actual position or output `pos` (supports_dtype numbering), by name.
const char* tensor_name(const OpTable& op, const Binding& binding, int32_t pos);
// The dtype already chosen for spec input `spec` in `dtypes` (supports_dtype numbering) if it comes
// before `pos`, else -1.
int32_t earlier_input_dtype(const Binding& binding, int32_t spec, int32_t pos, const int32_t* dtypes);
// Product of all dimensions but the last (the rows of a [..., d] tensor) and the last; false if a
// dimension is unknown or the values do not fit an int.
bool rows_and_last(const Shape& shape, int64_t* rows, int64_t* last);
bool fits_int(int64_t value);
// Why enqueue cannot run: the launcher, declared weak by the op's glue, is not in this library (a
// build without plugins/<folder>/*.cu, as the emulated interface tests make).
std::string kernel_not_linked(const OpTable& op, const char* launcher);

// The element count of a shape (0 for an empty or absent one).
int64_t volume(const Shape& shape);
size_t dtype_size(int32_t dtype);

}  // namespace trt
}  // namespace jm

// Defines the op folder's glue, `const jm::trt::OpGlue& jm_trt_glue_<folder>()`, from OpGlue's
// members in order (table, then launcher, workspace, supports, check as far as given); the plugin
// library collects it for every op of trt_ops.h (JM_TRT_FOR_EACH_OP).
#define JM_TRT_DEFINE_GLUE(folder, ...)                     \
  const ::jm::trt::OpGlue& jm_trt_glue_##folder() {        \
    static const ::jm::trt::OpGlue glue{__VA_ARGS__};       \
    return glue;                                            \
  }
