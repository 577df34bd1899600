// NVRTC stand-in (CUDA 12.6 check): the math functions are built in
#pragma once
