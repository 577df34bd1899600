// Emulated-build stand-in for CUDA's <cuda_fp16.h>: the emulator provides what kernels use from it.
// This folder is on the include path of emulated builds only (see plugins/emulation.py).
#pragma once
#include "../../cuda_emu.h"
