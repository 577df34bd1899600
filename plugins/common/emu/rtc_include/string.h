// NVRTC stand-in (CUDA 12.6 check): device code uses memcpy / memset built in
#pragma once
