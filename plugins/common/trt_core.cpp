// The TensorRT-free plugin core: see trt_core.h.
#include "common/trt_core.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>

namespace jm {
namespace trt {

namespace {

std::string fmt_double(double x) {
  std::ostringstream s;
  s.precision(9);
  s << x;
  return s.str();
}

std::string dims_text(const Shape& s) {
  std::ostringstream out;
  out << "[";
  for (int j = 0; j < s.rank; ++j) out << (j ? ", " : "") << s.d[j];
  out << "]";
  return out.str();
}

bool fail(std::string* error, const std::string& message) {
  if (error) *error = message;
  return false;
}

// The index of dimension `dim` (negative: from the end) in a tensor of rank `rank`; -1 if none.
int axis(int32_t dim, int32_t rank) {
  int j = dim < 0 ? rank + dim : dim;
  return (j >= 0 && j < rank) ? j : -1;
}

bool rank_ok(const TensorRule& t, int32_t rank) {
  return t.rank >= 0 ? rank == t.rank : rank >= t.min_rank && rank <= kMaxRank;
}

std::string expected_rank(const TensorRule& t) {
  return t.rank >= 0 ? "rank " + std::to_string(t.rank) : "rank >= " + std::to_string(t.min_rank);
}

// Reads element k of a raw numeric field as double; false for a non-numeric type.
bool read_number(const RawField& f, int32_t k, double* value) {
  switch (f.type) {
    case RawType::kFloat32: { float v; std::memcpy(&v, static_cast<const char*>(f.data) + 4 * k, 4); *value = v; return true; }
    case RawType::kFloat64: { double v; std::memcpy(&v, static_cast<const char*>(f.data) + 8 * k, 8); *value = v; return true; }
    case RawType::kInt8: *value = static_cast<const int8_t*>(f.data)[k]; return true;
    case RawType::kInt16: { int16_t v; std::memcpy(&v, static_cast<const char*>(f.data) + 2 * k, 2); *value = v; return true; }
    case RawType::kInt32: { int32_t v; std::memcpy(&v, static_cast<const char*>(f.data) + 4 * k, 4); *value = v; return true; }
    case RawType::kInt64: {
      int64_t v;
      std::memcpy(&v, static_cast<const char*>(f.data) + 8 * k, 8);
      // beyond int32 it cannot be a valid int field; keep it out of range, not rounded into it
      *value = v > INT32_MAX ? 1e300 : v < INT32_MIN ? -1e300 : static_cast<double>(v);
      return true;
    }
    default: return false;
  }
}

bool is_float_type(RawType t) { return t == RawType::kFloat32 || t == RawType::kFloat64; }
bool is_int_type(RawType t) {
  return t == RawType::kInt8 || t == RawType::kInt16 || t == RawType::kInt32 || t == RawType::kInt64;
}

// The value of a field for range checks and messages.
bool check_value(const OpTable& op, const FieldSpec& spec, double v, std::string* error) {
  const std::string where = std::string(op.name) + ": field " + spec.name;
  if (std::isnan(v)) return fail(error, where + ": NaN is not allowed");
  if (std::isinf(v) && spec.finite) return fail(error, where + ": " + fmt_double(v) + " is not finite");
  if (spec.has_minimum && v < spec.minimum)
    return fail(error, where + ": " + fmt_double(v) + " is below " + fmt_double(spec.minimum));
  if (spec.has_maximum && v > spec.maximum)
    return fail(error, where + ": " + fmt_double(v) + " is above " + fmt_double(spec.maximum));
  return true;
}

}  // namespace

const char* dtype_name(int32_t dtype) {
  switch (dtype) {
    case 0: return "float32";
    case 1: return "float16";
    case 2: return "int8";
    case 5: return "uint8";
    default: return "another dtype";
  }
}

const char* raw_type_name(RawType type) {
  switch (type) {
    case RawType::kFloat16: return "kFLOAT16";
    case RawType::kFloat32: return "kFLOAT32";
    case RawType::kFloat64: return "kFLOAT64";
    case RawType::kInt8: return "kINT8";
    case RawType::kInt16: return "kINT16";
    case RawType::kInt32: return "kINT32";
    case RawType::kChar: return "kCHAR";
    case RawType::kDims: return "kDIMS";
    case RawType::kUnknown: return "kUNKNOWN";
    case RawType::kBF16: return "kBF16";
    case RawType::kInt64: return "kINT64";
  }
  return "an unknown field type";
}

// ---- ParsedFields ---------------------------------------------------------------------------------

int ParsedFields::index_of(const char* name) const {
  if (op_ == nullptr || name == nullptr) return -1;
  for (int k = 0; k < op_->nb_fields; ++k)
    if (std::strcmp(op_->fields[k].name, name) == 0) return k;
  return -1;
}

float ParsedFields::get_float(const char* name) const {
  int k = index_of(name);
  return k < 0 ? 0.0f : values_[k].f;
}

int32_t ParsedFields::get_int(const char* name) const {
  int k = index_of(name);
  return k < 0 ? 0 : values_[k].i;
}

const std::vector<float>& ParsedFields::get_floats(const char* name) const {
  static const std::vector<float> kNone;
  int k = index_of(name);
  return k < 0 ? kNone : values_[k].fs;
}

bool ParsedFields::operator==(const ParsedFields& other) const {
  if (op_ != other.op_ || values_.size() != other.values_.size()) return false;
  for (size_t k = 0; k < values_.size(); ++k) {
    const FieldValue& a = values_[k];
    const FieldValue& b = other.values_[k];
    if (std::memcmp(&a.f, &b.f, sizeof(float)) != 0 || a.i != b.i || a.fs.size() != b.fs.size()) return false;
    if (!a.fs.empty() && std::memcmp(a.fs.data(), b.fs.data(), a.fs.size() * sizeof(float)) != 0) return false;
  }
  return true;
}

// ---- fields ---------------------------------------------------------------------------------------

bool parse_fields(const OpTable& op, const RawField* fields, int32_t nb_fields, ParsedFields* out,
                  std::string* error) {
  const std::string name = op.name;
  if (nb_fields < 0 || (nb_fields > 0 && fields == nullptr))
    return fail(error, name + ": the field collection is malformed (" + std::to_string(nb_fields) + " fields)");
  ParsedFields parsed(&op);
  std::vector<bool> seen(op.nb_fields, false);
  for (int32_t n = 0; n < nb_fields; ++n) {
    const RawField& f = fields[n];
    if (f.name == nullptr) return fail(error, name + ": field " + std::to_string(n) + " has no name");
    int k = parsed.index_of(f.name);
    if (k < 0) {
      std::string known;
      for (int j = 0; j < op.nb_fields; ++j) known += (j ? ", " : "") + std::string(op.fields[j].name);
      return fail(error, name + ": unknown field " + f.name + " (fields: " + (known.empty() ? "none" : known) + ")");
    }
    const FieldSpec& spec = op.fields[k];
    const std::string where = name + ": field " + spec.name;
    if (seen[k]) return fail(error, where + " is given twice");
    seen[k] = true;
    const bool type_ok = spec.kind == FieldKind::kInt ? is_int_type(f.type) : is_float_type(f.type);
    if (!type_ok) {
      const char* want = spec.kind == FieldKind::kInt ? "an int (kINT32)" : "a float (kFLOAT32)";
      return fail(error, where + ": expected " + want + ", got " + raw_type_name(f.type));
    }
    if (spec.kind == FieldKind::kFloats ? f.length < 1 : f.length != 1)
      return fail(error, where + ": expected " + (spec.kind == FieldKind::kFloats ? "at least one value" : "one value") +
                             ", got " + std::to_string(f.length));
    if (f.data == nullptr) return fail(error, where + ": no data");
    FieldValue& value = parsed.at(k);
    for (int32_t e = 0; e < f.length; ++e) {
      double v = 0.0;
      read_number(f, e, &v);
      if (!check_value(op, spec, v, error)) return false;
      if (spec.kind == FieldKind::kInt) {
        if (v < INT32_MIN || v > INT32_MAX) return fail(error, where + ": " + fmt_double(v) + " does not fit int32");
        value.i = static_cast<int32_t>(v);
      } else {
        // float32 is what the kernels compute with; a kFLOAT64 value must survive the narrowing
        const float narrowed = static_cast<float>(v);
        if (std::isinf(narrowed) && !std::isinf(v)) return fail(error, where + ": " + fmt_double(v) + " overflows float32");
        if (!check_value(op, spec, narrowed, error)) return false;
        if (spec.kind == FieldKind::kFloat) value.f = narrowed;
        else value.fs.push_back(narrowed);
      }
    }
  }
  for (int k = 0; k < op.nb_fields; ++k) {
    if (seen[k]) continue;
    const FieldSpec& spec = op.fields[k];
    if (spec.required) return fail(error, name + ": missing field " + spec.name);
    if (spec.kind == FieldKind::kInt) parsed.at(k).i = static_cast<int32_t>(spec.default_value);
    else if (spec.kind == FieldKind::kFloat) parsed.at(k).f = static_cast<float>(spec.default_value);
    else parsed.at(k).fs.assign(1, static_cast<float>(spec.default_value));
  }
  if (out) *out = std::move(parsed);
  return true;
}

std::vector<RawField> serialize_fields(const ParsedFields& fields) {
  std::vector<RawField> out;
  const OpTable* op = fields.op();
  if (op == nullptr) return out;
  for (int k = 0; k < op->nb_fields; ++k) {
    const FieldSpec& spec = op->fields[k];
    const FieldValue& v = fields.at(k);
    switch (spec.kind) {
      case FieldKind::kFloat: out.push_back({spec.name, &v.f, RawType::kFloat32, 1}); break;
      case FieldKind::kInt: out.push_back({spec.name, &v.i, RawType::kInt32, 1}); break;
      case FieldKind::kFloats:
        out.push_back({spec.name, v.fs.data(), RawType::kFloat32, static_cast<int32_t>(v.fs.size())});
        break;
    }
  }
  return out;
}

// ---- binding --------------------------------------------------------------------------------------

bool bind_inputs(const OpTable& op, int32_t nb_inputs, Binding* binding, std::string* error) {
  int32_t required = 0, optional_index = -1;
  for (int i = 0; i < op.nb_inputs; ++i) {
    if (op.inputs[i].optional) optional_index = i;
    else ++required;
  }
  if (nb_inputs < required || nb_inputs > op.nb_inputs)
    return fail(error, std::string(op.name) + ": " + std::to_string(nb_inputs) + " inputs, expected " +
                           (required == op.nb_inputs ? std::to_string(required)
                                                     : std::to_string(required) + " or " + std::to_string(op.nb_inputs)));
  Binding b;
  b.nb_actual = nb_inputs;
  const bool skip_optional = nb_inputs < op.nb_inputs;  // the one optional input is absent
  int32_t actual = 0;
  for (int i = 0; i < op.nb_inputs; ++i) {
    if (skip_optional && i == optional_index) {
      b.actual_of_spec[i] = -1;
      continue;
    }
    b.actual_of_spec[i] = actual;
    b.spec_of_actual[actual++] = i;
  }
  if (binding) *binding = b;
  return true;
}

bool check_nb_outputs(const OpTable& op, int32_t nb_outputs, std::string* error) {
  if (nb_outputs == op.nb_outputs) return true;
  return fail(error, std::string(op.name) + ": " + std::to_string(nb_outputs) + " outputs, expected " +
                         std::to_string(op.nb_outputs));
}

// ---- shapes ---------------------------------------------------------------------------------------

int64_t eval_expr(const OpTable& op, int32_t expr, const Shape* inputs, const ParsedFields& fields) {
  if (expr < 0 || expr >= op.nb_exprs) return -1;
  const DimExpr& e = op.exprs[expr];
  switch (e.kind) {
    case ExprKind::kInputDim: {
      const Shape& s = inputs[e.a];
      int j = axis(e.b, s.rank);
      return j < 0 ? -1 : (s.d[j] < 0 ? -1 : s.d[j]);
    }
    case ExprKind::kField: return fields.at(e.a).i;
    case ExprKind::kConst: return e.value;
    default: break;
  }
  const int64_t a = eval_expr(op, e.a, inputs, fields);
  const int64_t b = eval_expr(op, e.b, inputs, fields);
  if (a < 0 || b < 0) return -1;
  switch (e.kind) {
    case ExprKind::kSum: return a + b;
    case ExprKind::kSub: return a - b;
    case ExprKind::kProd: return a * b;
    case ExprKind::kFloorDiv: return b == 0 ? -1 : a / b;  // non-negative operands: truncation is floor
    default: return -1;
  }
}

bool check_shapes(const OpTable& op, const ParsedFields& fields, const Shape* inputs, std::string* error) {
  const std::string name = op.name;
  for (int i = 0; i < op.nb_inputs; ++i) {
    const TensorRule& t = op.inputs[i];
    if (inputs[i].rank < 0) {
      if (!t.optional) return fail(error, name + ": input " + t.name + " is missing");
      continue;
    }
    if (!rank_ok(t, inputs[i].rank))
      return fail(error, name + ": input " + t.name + " " + t.shape + " has rank " + std::to_string(inputs[i].rank) +
                             ", expected " + expected_rank(t));
  }
  for (int c = 0; c < op.nb_checks; ++c) {
    const DimCheck& check = op.checks[c];
    const Shape& s = inputs[check.input];
    if (s.rank < 0) continue;
    const int j = axis(check.dim, s.rank);
    const int64_t want = eval_expr(op, check.expr, inputs, fields);
    if (j < 0 || s.d[j] < 0 || want < 0) continue;
    if (s.d[j] != want) {
      const TensorRule& t = op.inputs[check.input];
      return fail(error, name + ": input " + t.name + " " + t.shape + " has dims " + dims_text(s) + ": dim " +
                             std::to_string(j) + " should be " + std::to_string(want));
    }
  }
  for (int k = 0; k < op.nb_fields; ++k) {
    const FieldSpec& spec = op.fields[k];
    if (spec.kind != FieldKind::kFloats || spec.length_expr < 0) continue;
    const int64_t channels = eval_expr(op, spec.length_expr, inputs, fields);
    const size_t n = fields.at(k).fs.size();
    if (channels >= 0 && n != 1 && static_cast<int64_t>(n) != channels)
      return fail(error, name + ": field " + spec.name + " has " + std::to_string(n) + " values for " +
                             std::to_string(channels) + " channels (" + spec.doc + ")");
  }
  for (int l = 0; l < op.nb_limits; ++l) {
    const LimitRule& limit = op.limits[l];
    if (limit.gate_field >= 0 && fields.at(limit.gate_field).i == 0) continue;
    const int64_t v = eval_expr(op, limit.expr, inputs, fields);
    if (v < 0) continue;
    bool allowed = false;
    for (int a = 0; a < limit.nb_allowed && !allowed; ++a) allowed = limit.allowed[a] == v;
    if (!allowed) return fail(error, name + ": " + std::to_string(v) + " is outside the kernels' limit (" + limit.doc + ")");
  }
  return true;
}

bool output_shapes(const OpTable& op, const ParsedFields& fields, const Shape* inputs, Shape* outputs,
                   std::string* error) {
  for (int i = 0; i < op.nb_inputs; ++i) {
    const TensorRule& t = op.inputs[i];
    if (inputs[i].rank < 0 && t.optional) continue;
    if (!rank_ok(t, inputs[i].rank))
      return fail(error, std::string(op.name) + ": input " + t.name + " " + t.shape + " has rank " +
                             std::to_string(inputs[i].rank) + ", expected " + expected_rank(t));
  }
  for (int o = 0; o < op.nb_outputs; ++o) {
    const TensorRule& t = op.outputs[o];
    Shape s;
    if (t.copy_dims_of >= 0) {
      s = inputs[t.copy_dims_of];
    } else {
      s.rank = t.rank;
      for (int j = 0; j < t.rank; ++j) s.d[j] = eval_expr(op, t.dims[j], inputs, fields);
    }
    outputs[o] = s;
  }
  return true;
}

// ---- dtypes ---------------------------------------------------------------------------------------

bool output_dtypes(const OpTable& op, const Binding& binding, const int32_t* input_dtypes, int32_t* output_dtypes,
                   std::string* error) {
  for (int o = 0; o < op.nb_outputs; ++o) {
    const TensorRule& t = op.outputs[o];
    if (t.same_dtype_as < 0) {
      output_dtypes[o] = t.dtypes == kF32 ? 0 : t.dtypes == kF16 ? 1 : 2;
      continue;
    }
    const int32_t actual = binding.actual_of_spec[t.same_dtype_as];
    const int32_t dtype = actual < 0 ? -1 : input_dtypes[actual];
    if ((dtype_bit(dtype) & t.dtypes) == 0)
      return fail(error, std::string(op.name) + ": output " + t.name + " takes input " +
                             op.inputs[t.same_dtype_as].name + "'s dtype, " + dtype_name(dtype) +
                             ", which it cannot have");
    output_dtypes[o] = dtype;
  }
  return true;
}

bool supports_dtype(const OpTable& op, const Binding& binding, int32_t pos, const int32_t* dtypes, bool linear_format,
                    std::string* why) {
  if (pos < 0 || pos >= binding.nb_actual + op.nb_outputs) return fail(why, "no such tensor");
  const bool is_input = pos < binding.nb_actual;
  const TensorRule& t = is_input ? op.inputs[binding.spec_of_actual[pos]] : op.outputs[pos - binding.nb_actual];
  if (!linear_format) return fail(why, std::string(t.name) + ": linear format only");
  if ((dtype_bit(dtypes[pos]) & t.dtypes) == 0)
    return fail(why, std::string(t.name) + ": " + dtype_name(dtypes[pos]) + " is not one of its dtypes");
  if (t.same_dtype_as >= 0) {
    const int32_t other = binding.actual_of_spec[t.same_dtype_as];
    // the tensor it follows always comes earlier (an input before its followers, inputs before outputs)
    if (other >= 0 && other < pos && dtypes[other] != dtypes[pos])
      return fail(why, std::string(t.name) + " must have " + op.inputs[t.same_dtype_as].name + "'s dtype");
  }
  return true;
}

// ---- sizes ----------------------------------------------------------------------------------------

int64_t volume(const Shape& shape) {
  if (shape.rank < 0) return 0;
  int64_t n = 1;
  for (int j = 0; j < shape.rank; ++j) n *= shape.d[j] < 0 ? 0 : shape.d[j];
  return n;
}

size_t dtype_size(int32_t dtype) {
  switch (dtype) {
    case 0: return 4;
    case 1: return 2;
    case 2: return 1;
    case 5: return 1;
    default: return 0;
  }
}

// ---- helpers for the per-op glue ----------------------------------------------------------------

std::string cuda_status(const char* launcher, int code, const char* message) {
  if (code == 0) return std::string();
  return std::string(launcher) + ": " + (message ? message : "CUDA error") + " (" + std::to_string(code) + ")";
}

const char* tensor_name(const OpTable& op, const Binding& binding, int32_t pos) {
  if (pos < 0) return "?";
  if (pos < binding.nb_actual) return op.inputs[binding.spec_of_actual[pos]].name;
  return pos - binding.nb_actual < op.nb_outputs ? op.outputs[pos - binding.nb_actual].name : "?";
}

int32_t earlier_input_dtype(const Binding& binding, int32_t spec, int32_t pos, const int32_t* dtypes) {
  const int32_t actual = spec >= 0 && spec < kMaxTensors ? binding.actual_of_spec[spec] : -1;
  return (actual >= 0 && actual < pos) ? dtypes[actual] : -1;
}

bool rows_and_last(const Shape& shape, int64_t* rows, int64_t* last) {
  if (shape.rank < 1) return false;
  int64_t r = 1;
  for (int j = 0; j + 1 < shape.rank; ++j) {
    if (shape.d[j] < 0) return false;
    r *= shape.d[j];
  }
  if (shape.d[shape.rank - 1] < 0) return false;
  *rows = r;
  *last = shape.d[shape.rank - 1];
  return fits_int(r) && fits_int(*last);
}

bool fits_int(int64_t value) { return value >= 0 && value <= INT32_MAX; }

std::string kernel_not_linked(const OpTable& op, const char* launcher) {
  return std::string(op.name) + ": " + launcher + " is not linked into this library (built without plugins/" +
         op.folder + "/*.cu)";
}

}  // namespace trt
}  // namespace jm
