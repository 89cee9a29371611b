// common.cuh: prepended by the crate to every kernel family before NVRTC compiles it.
//
// Self-contained on purpose: no toolkit header is included, so NVRTC needs nothing beyond
// libnvrtc (and its builtins) to compile the families. Half types are plain 16-bit storage
// structs with explicit conversions; every arithmetic is f32 (or f64 where noted).

typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned short u16;

struct bf16 { u16 bits; };
struct f16 { u16 bits; };

// Runtime element-type codes; the same numbers as `DTypeCode` on the Rust side.
#define DT_F32 0u
#define DT_F16 1u
#define DT_BF16 2u
#define DT_U32 3u

#define F32_MAX 3.402823466e+38f
#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f

__device__ __forceinline__ float f32_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float f32_nan() { return __int_as_float(0x7fc00000); }

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __uint_as_float(((u32)x.bits) << 16); }
__device__ __forceinline__ float to_f32(f16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
}

__device__ __forceinline__ u16 f32_to_bf16_bits(float x) {
    u32 u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (u16)0x7fc0u;  // quiet NaN
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (u16)(u >> 16);
}

__device__ __forceinline__ u16 f32_to_f16_bits(float x) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) {
    bf16 r;
    r.bits = f32_to_bf16_bits(x);
    return r;
}
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) {
    f16 r;
    r.bits = f32_to_f16_bits(x);
    return r;
}

// Loads element `i` of a buffer whose element type is known only at run time (uniform branch).
__device__ __forceinline__ float ld_any(const void* p, u32 dt, u64 i) {
    if (dt == DT_F32) {
        return ((const float*)p)[i];
    } else if (dt == DT_BF16) {
        return to_f32(((const bf16*)p)[i]);
    } else {
        return to_f32(((const f16*)p)[i]);
    }
}

// Stores `v` as element `i` of a float buffer whose element type is known only at run time.
__device__ __forceinline__ void st_any(void* p, u32 dt, u64 i, float v) {
    if (dt == DT_F32) {
        ((float*)p)[i] = v;
    } else if (dt == DT_BF16) {
        ((bf16*)p)[i] = from_f32<bf16>(v);
    } else {
        ((f16*)p)[i] = from_f32<f16>(v);
    }
}

// Rounds a value to the precision of a run-time element type (as PyTorch does before the weight
// multiply of a norm).
__device__ __forceinline__ float round_to(u32 dt, float v) {
    if (dt == DT_BF16) {
        return to_f32(from_f32<bf16>(v));
    } else if (dt == DT_F16) {
        return to_f32(from_f32<f16>(v));
    }
    return v;
}

// 2^x on the special-function unit (flushes subnormal results to zero).
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float fast_exp(float x) { return fast_exp2(x * LOG2E_F); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024). `scratch` holds 32 floats.
// Every thread receives the result.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    float t = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(t);
}

// Maximum over the block; `scratch` holds 32 floats. Every thread receives the result.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    float t = lane < warps ? scratch[lane] : -f32_inf();
    return warp_max(t);
}

// ---------------------------------------------------------------------------------------------
// The online-softmax state (see axpo-core's backend/stats.rs): running max m, s = sum e^(z-m),
// u = sum e^(z-m) (z-m), q = sum e^(2(z-m)). A state with s == 0 is empty.

struct Online {
    float m;
    float s;
    float u;
    float q;
};

__device__ __forceinline__ Online online_empty() {
    Online o;
    o.m = -F32_MAX;
    o.s = 0.0f;
    o.u = 0.0f;
    o.q = 0.0f;
    return o;
}

// Moves the reference maximum of `st` up to `mx` (mx >= st.m).
__device__ __forceinline__ void online_rebase(Online& st, float mx) {
    if (st.s > 0.0f) {
        const float d = st.m - mx;
        const float a = fast_exp(d);
        st.u = a * (st.u + d * st.s);
        st.s *= a;
        st.q *= a * a;
    }
    st.m = mx;
}

// Folds one logit into the state whose maximum already covers it (z <= st.m or -inf).
__device__ __forceinline__ void online_push(Online& st, float z) {
    const float d = z - st.m;
    const float e = fast_exp(d);
    if (e > 0.0f) {
        st.s += e;
        st.u = fmaf(e, d, st.u);
        st.q = fmaf(e, e, st.q);
    }
}

// Folds `n` logits (n small, compile-time in callers) in one rebase.
template <int N>
__device__ __forceinline__ void online_push_n(Online& st, const float* z) {
    float mx = st.m;
#pragma unroll
    for (int i = 0; i < N; ++i) {
        mx = fmaxf(mx, z[i]);
    }
    if (mx > st.m) {
        online_rebase(st, mx);
    }
#pragma unroll
    for (int i = 0; i < N; ++i) {
        online_push(st, z[i]);
    }
}

// Merges two states (StatsState::merge without the target slot).
__device__ __forceinline__ Online online_merge(Online a, const Online& b) {
    if (!(b.s > 0.0f)) {
        return a;
    }
    if (!(a.s > 0.0f)) {
        return b;
    }
    const float mx = fmaxf(a.m, b.m);
    const float da = a.m - mx;
    const float db = b.m - mx;
    const float ea = fast_exp(da);
    const float eb = fast_exp(db);
    Online r;
    r.m = mx;
    r.s = ea * a.s + eb * b.s;
    r.u = ea * (a.u + da * a.s) + eb * (b.u + db * b.s);
    r.q = ea * ea * a.q + eb * eb * b.q;
    return r;
}

__device__ __forceinline__ Online online_shfl_xor(const Online& a, int o) {
    Online b;
    b.m = __shfl_xor_sync(0xffffffffu, a.m, o);
    b.s = __shfl_xor_sync(0xffffffffu, a.s, o);
    b.u = __shfl_xor_sync(0xffffffffu, a.u, o);
    b.q = __shfl_xor_sync(0xffffffffu, a.q, o);
    return b;
}

// Block-wide merge; `scratch` holds 32 Online values. Every thread receives the result.
__device__ __forceinline__ Online block_online(Online st, Online* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        st = online_merge(st, online_shfl_xor(st, o));
    }
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = st;
    }
    __syncthreads();
    Online t = lane < warps ? scratch[lane] : online_empty();
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        t = online_merge(t, online_shfl_xor(t, o));
    }
    return t;
}

// The finished statistics of one row, in f64 as the CPU reference computes them.
struct Finished {
    double logp;
    double entropy;
    double sum_p2;
    double lse;
};

__device__ __forceinline__ Finished online_finish(const Online& st, float target) {
    const double s = (double)st.s;
    const double ln_s = log(s);
    const double lse = (double)st.m + ln_s;
    Finished f;
    f.logp = (double)target - lse;
    f.entropy = fmax(ln_s - (double)st.u / s, 0.0);
    f.sum_p2 = (double)st.q / (s * s);
    f.lse = lse;
    return f;
}

// d loss / d z for one logit (stats.rs `logit_grad`), in f32.
__device__ __forceinline__ float logit_grad(float z, bool is_target, float lse, float entropy,
                                            float g_logp, float g_entropy) {
    const float lnp = z - lse;
    const float p = fast_exp(lnp);
    if (!(p > 0.0f)) {
        return is_target ? g_logp : 0.0f;
    }
    const float onehot = is_target ? 1.0f : 0.0f;
    return g_logp * (onehot - p) - g_entropy * p * (lnp + entropy);
}

// ---------------------------------------------------------------------------------------------
// The objective's per-token loss and gradient for the configurations that need no reduction
// over a sequence (PPO-clip with optional dual clip, CISPO, plain policy gradient; token-level
// truncated importance sampling; a KL penalty; an entropy bonus). Mirrors
// axpo_core::objective::evaluate in f64. The layout matches `ObjectiveParams` on the Rust side.

#define LOSS_PPO 0u
#define LOSS_CISPO_RELATIVE 1u
#define LOSS_CISPO_UPPER 2u
#define LOSS_PG 3u

#define KL_NONE 0u
#define KL_K1 1u
#define KL_K2 2u
#define KL_K3 3u

struct ObjectiveParams {
    u32 loss;           // LOSS_*
    u32 kl;             // KL_*
    u32 has_dual;       // PPO dual clip present
    u32 tis;            // 1: token-level TIS
    double eps_low;     // PPO / CISPO-relative lower margin
    double eps_high;    // PPO / CISPO-relative upper margin
    double dual_clip;   // PPO dual-clip bound c
    double cispo_max;   // CISPO upper-only bound
    double kl_beta;     // KL coefficient
    double entropy_coef;
    double tis_cap;
    double clamp;       // log-ratio clamp
};

struct TokenObjective {
    double loss;       // this token's weighted contribution to the loss
    double d_logp;
    double d_entropy;
};

__device__ __forceinline__ double clamped_exp(double x, double c, bool* inside) {
    if (x > c) {
        *inside = false;
        return exp(c);
    }
    if (x < -c) {
        *inside = false;
        return exp(-c);
    }
    *inside = true;
    return exp(x);
}

__device__ __forceinline__ double ppo_value(double rho, double a, double lo, double hi,
                                            bool has_dual, double dual, double* grad_factor) {
    // Returns the value; *grad_factor is 1 when the unclipped branch is active (gradient
    // -a * drho), 0 otherwise.
    const double unclipped = -a * rho;
    const double rc = fmin(fmax(rho, lo), hi);
    const double clipped = -a * rc;
    double value;
    if (clipped > unclipped) {
        value = clipped;
        *grad_factor = 0.0;
    } else {
        value = unclipped;
        *grad_factor = 1.0;
    }
    if (has_dual && a < 0.0 && value > -dual * a) {
        value = -dual * a;
        *grad_factor = 0.0;
    }
    return value;
}

__device__ __forceinline__ TokenObjective token_objective(
    const ObjectiveParams& p, double logp, double old_logp, double adv, double weight,
    double rollout_logp, double ref_logp, double entropy) {
    const double c = p.clamp;
    bool inside;
    const double rho = clamped_exp(logp - old_logp, c, &inside);
    const double drho = inside ? rho : 0.0;
    double value = 0.0;
    double grad = 0.0;
    if (p.loss == LOSS_PPO) {
        double gf;
        value = ppo_value(rho, adv, 1.0 - p.eps_low, 1.0 + p.eps_high,
                          p.has_dual != 0u, p.dual_clip, &gf);
        grad = gf > 0.0 ? -adv * drho : 0.0;
    } else if (p.loss == LOSS_CISPO_RELATIVE || p.loss == LOSS_CISPO_UPPER) {
        double w;
        if (p.loss == LOSS_CISPO_RELATIVE) {
            w = fmin(fmax(rho, 1.0 - p.eps_low), 1.0 + p.eps_high);
        } else {
            w = fmin(rho, p.cispo_max);
        }
        value = -w * adv * logp;
        grad = -w * adv;
    } else {
        value = -adv * logp;
        grad = -adv;
    }
    double tis = 1.0;
    if (p.tis != 0u) {
        bool in2;
        tis = fmin(clamped_exp(old_logp - rollout_logp, c, &in2), p.tis_cap);
    }
    TokenObjective out;
    out.loss = weight * tis * value;
    out.d_logp = weight * tis * grad;
    if (p.kl != KL_NONE) {
        const double u = logp - ref_logp;
        double k;
        double dk;
        if (p.kl == KL_K1) {
            k = u;
            dk = 1.0;
        } else if (p.kl == KL_K2) {
            k = 0.5 * u * u;
            dk = u;
        } else {
            bool in3;
            const double e = clamped_exp(-u, c, &in3);
            const double x = fmin(fmax(-u, -c), c);
            k = e - 1.0 - x;
            if (k > 10.0) {
                k = 10.0;
                dk = 0.0;
            } else {
                dk = in3 ? 1.0 - e : 0.0;
            }
        }
        out.loss += weight * p.kl_beta * k;
        out.d_logp += weight * p.kl_beta * dk;
    }
    out.d_entropy = 0.0;
    if (p.entropy_coef != 0.0) {
        out.loss -= weight * p.entropy_coef * entropy;
        out.d_entropy = -weight * p.entropy_coef;
    }
    return out;
}
