// Shared by every module (prepended, then the generated `NAME_at` accessors, then the family).

// The lowest finite f32: the initial maximum of the online-softmax state.
const LOWEST: f32 = -3.40282347e+38;

// The workgroup's index in a 2D grid of workgroups laid out row by row.
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// -inf, detected by its bits (no reliance on IEEE comparisons of infinities).
fn is_neg_inf(x: f32) -> bool {
    return bitcast<u32>(x) == 0xff800000u;
}

// Rounds to the nearest bf16 (ties to even), returned as the bf16 bits in the low half.
fn bf16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu) != 0u) {
        return (b >> 16u) | 0x0040u;
    }
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

// x rounded to bf16 precision.
fn round_bf16(x: f32) -> f32 {
    return bitcast<f32>(bf16_bits(x) << 16u);
}

// The f32 value of the f16 bits in the low half of `h` (exact; bit manipulation only, so no
// adapter capability is needed).
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        let v = f32(m) * 5.9604644775390625e-8;
        return select(v, -v, sign != 0u);
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// Rounds to the nearest f16 (ties to even), returned as the f16 bits.
fn f16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a >= 0x7f800000u) {
        return sign | 0x7c00u | select(0u, 0x200u, a > 0x7f800000u);
    }
    if (a >= 0x477ff000u) {
        return sign | 0x7c00u;
    }
    if (a < 0x38800000u) {
        // Subnormal or zero: the mantissa is |x| 2^24 rounded (round() ties to even).
        return sign | u32(round(bitcast<f32>(a) * 16777216.0));
    }
    let e = a - 0x38000000u;
    return sign | ((e + 0x0fffu + ((e >> 13u) & 1u)) >> 13u);
}

// x rounded to f16 precision.
fn round_f16(x: f32) -> f32 {
    return f16_to_f32(f16_bits(x));
}

// x rounded to the precision `mode` names: 0 none, 1 bf16, 2 f16.
fn round_to(x: f32, mode: u32) -> f32 {
    if (mode == 1u) {
        return round_bf16(x);
    }
    if (mode == 2u) {
        return round_f16(x);
    }
    return x;
}
