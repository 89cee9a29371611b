// elementwise.cu: arithmetic and activations over flat buffers, f32 arithmetic, any float input
// types (run-time codes), grid-stride loops.

#define ACT_SILU 0u
#define ACT_GELU_TANH 1u
#define ACT_GELU_ERF 2u

__device__ __forceinline__ float activate(float x, u32 act) {
    if (act == ACT_SILU) {
        return x / (1.0f + expf(-x));
    } else if (act == ACT_GELU_TANH) {
        const float c = 0.7978845608028654f;  // sqrt(2 / pi)
        return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
    }
    return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}

#define GRID_STRIDE(i, n)                                                                      \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                          \
         i += (u64)gridDim.x * blockDim.x)

extern "C" __global__ void add_assign(void* dst, u32 ddt, const void* src, u32 sdt, u64 n) {
    GRID_STRIDE(i, n) { st_any(dst, ddt, i, ld_any(dst, ddt, i) + ld_any(src, sdt, i)); }
}

extern "C" __global__ void mul(const void* a, u32 adt, const void* b, u32 bdt, float* out,
                               u64 n) {
    GRID_STRIDE(i, n) { out[i] = ld_any(a, adt, i) * ld_any(b, bdt, i); }
}

extern "C" __global__ void add_bias(void* x, u32 xdt, const void* bias, u32 bdt, u64 n,
                                    u32 cols) {
    GRID_STRIDE(i, n) { st_any(x, xdt, i, ld_any(x, xdt, i) + ld_any(bias, bdt, i % cols)); }
}

extern "C" __global__ void activation(const void* x, u32 xdt, float* out, u64 n, u32 act) {
    GRID_STRIDE(i, n) { out[i] = activate(ld_any(x, xdt, i), act); }
}

// silu(gate) * up.
extern "C" __global__ void swiglu(const void* gate, u32 gdt, const void* up, u32 udt, float* out,
                                  u64 n) {
    GRID_STRIDE(i, n) { out[i] = activate(ld_any(gate, gdt, i), ACT_SILU) * ld_any(up, udt, i); }
}

// act(x + bias) with the bias broadcast over rows; `out` may be `x` itself when x is f32.
extern "C" __global__ void bias_activation(const void* x, u32 xdt, const void* bias, u32 bdt,
                                           float* out, u64 n, u32 cols, u32 act) {
    GRID_STRIDE(i, n) {
        out[i] = activate(ld_any(x, xdt, i) + ld_any(bias, bdt, i % cols), act);
    }
}
