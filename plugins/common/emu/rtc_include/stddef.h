// NVRTC stand-in (CUDA 12.6 check): size_t and ptrdiff_t are built in
#pragma once
#ifndef NULL
#define NULL 0
#endif
#define offsetof(type, member) __builtin_offsetof(type, member)
