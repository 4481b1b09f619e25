/*
 * Vectorizable exponential, sigmoid and tanh, the activation loops and the sums of nnback.
 *
 * Scalar functions (static inline, safe to call from nogil Cython code):
 *
 *   float  nnb_expf(float x)          double nnb_exp(double x)          e^x
 *   float  nnb_sigmoidf(float x)      double nnb_sigmoid(double x)      1 / (1 + e^-x)
 *   float  nnb_tanhf(float x)         double nnb_tanh(double x)         tanh x
 *   float  nnb_expm1f_nonpos(float x) double nnb_expm1_nonpos(double x) e^x - 1, for x <= 0 only
 *   float  nnb_reluf(float x)         double nnb_relu(double x)         ReLU, NaN stays NaN
 *   float  nnb_relu_maskf(float y)    double nnb_relu_mask(double y)    ReLU derivative mask
 *
 * Array loops, n elements, outputs may alias an input exactly (the same pointer) but
 * must not overlap it partially:
 *
 *   nnb_exp_f32/_f64(x, y, n)                      y = e^x
 *   nnb_sigmoid_forward_f32/_f64(x, y, n)          y = sigmoid(x)
 *   nnb_sigmoid_backward_f32/_f64(y, dy, dx, n)    dx = dy * y * (1 - y)
 *   nnb_tanh_forward_f32/_f64(x, y, n)             y = tanh(x)
 *   nnb_tanh_backward_f32/_f64(y, dy, dx, n)       dx = dy * (1 - y * y)
 *   nnb_relu_forward_f32/_f64(x, y, n)             y = x if x > 0, 0 if x <= 0, NaN if x is NaN
 *   nnb_relu_backward_f32/_f64(y, dy, dx, n)       dx = dy * m, m = 1 if y > 0, 0 if y <= 0, NaN if y is NaN
 *
 * Sums, vectorized without reassociation and accumulated in double precision, except
 * that float arrays of fewer than NNB_SUM_LANES (16) entries are summed in float:
 *
 *   double nnb_sum_f32/_f64(x, n)                           sum_i x[i]
 *   void   nnb_sum_columns_f32(x, n_rows, n_columns, sums)  sums[j] = sum_i x[i * n_columns + j]
 *
 * Method of the exponential. No libm call, table or branch, so GCC and clang vectorize
 * loops that call these functions without -ffast-math:
 *
 *   1. Clamp x to a range outside of which e^x rounds to 0 or overflows to +inf. The
 *      comparisons are false for NaN, so NaN passes through every later step.
 *   2. Round n = x / ln2 to the nearest integer by adding 1.5 * 2^23 (float) or
 *      1.5 * 2^52 (double): the sum's low mantissa bits are then n in two's complement.
 *   3. r = (x - n * LN2_HI) - n * LN2_LO. LN2_HI has enough trailing zero bits that
 *      n * LN2_HI and the first subtraction are exact (Cody and Waite's two-constant
 *      split of ln2), so |r| <= ln2 / 2 plus a rounding error.
 *   4. e^r - 1 = r + r^2 * q(r), with q a polynomial of degree 4 (float) or 9 (double)
 *      fitted by the Remez exchange algorithm to the relative error of e^r - 1 on
 *      [-0.3468, 0.3468]. The fitting error is 2^-26.1 (float) and 2^-55.6 (double),
 *      below the rounding error of the evaluation.
 *   5. e^x = ((1 + (e^r - 1)) * 2^n1) * 2^n2 with n1 = round(n / 2) and n2 = n - n1.
 *      The powers of two are built from integer bits. Both halves are normal numbers,
 *      so a result in the subnormal range is rounded once, by the last product, and a
 *      result above the float or double maximum overflows to +inf.
 *
 * e^x - 1 for x <= 0 reuses steps 2 to 4 and returns 2^n * (e^r - 1) + (2^n - 1),
 * which keeps full relative accuracy for tiny |x|. tanh x = -m / (2 + m) with
 * m = e^(-2|x|) - 1 and the sign of x, so it is accurate near 0 and exactly +-1 for
 * large |x|. sigmoid x = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with
 * e = e^-|x| <= 1, so no intermediate overflows.
 *
 * Special values: e^NaN = NaN, e^+inf = +inf and e^-inf = 0. sigmoid(+inf) = 1 and
 * sigmoid(-inf) = 0. tanh(+-inf) = +-1 and tanh(-0) = -0. NaN in gives NaN out everywhere.
 *
 * Accuracy, as the max error in units in the last place (ulp) of the exact result,
 * subnormal results included. float: every float32 input, against float64 libm, with
 * and without FMA. double: 30 million inputs (uniform over the finite range, random
 * bit patterns, tiny magnitudes) against x87 long double expl/tanhl.
 *
 *   nnb_expf      1.05 ulp      nnb_exp      1.05 ulp
 *   nnb_sigmoidf  2.41 ulp      nnb_sigmoid  2.17 ulp
 *   nnb_tanhf     2.50 ulp      nnb_tanh     2.53 ulp   (tests assert 1.1, 2.5 and 3)
 *
 * The shifter rounding in step 2 relies on IEEE arithmetic in round-to-nearest mode,
 * so this file refuses to compile under -ffast-math.
 *
 * On x86-64 Linux with glibc and GCC 12 or newer, every array loop is compiled three
 * times (x86-64-v4 with AVX-512, x86-64-v3 with AVX2 and FMA, and the baseline), and
 * the dynamic loader picks the best one for the running CPU. Define
 * NNBACK_NO_TARGET_CLONES to compile only the baseline. The FMA versions contract
 * a * b + c into one rounding, so the last bit of a result can differ between CPUs.
 * Measured on a Zen 4 core (gcc 12, 2^16 float32 in cache), the AVX-512 version of
 * sigmoid takes 0.38 ns per element, the AVX2 one 0.54 and the SSE2 baseline 1.86.
 *
 * NOTE: GCC 12 vectorizes the double exp, sigmoid and tanh loops and the double ReLU
 * backward only for x86-64-v3 and newer, because SSE2 has no 64-bit integer compare
 * for the selection masks. The baseline double loops run scalar, about 12 times
 * slower than AVX-512. clang 14 vectorizes them for SSE2, but gets no clones.
 */

#ifndef NNBACK_FASTMATH_H
#define NNBACK_FASTMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__FAST_MATH__)
#error "_fastmath.h needs IEEE arithmetic: compile it without -ffast-math"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define NNB_INLINE static inline __attribute__((always_inline))
#else
#define NNB_INLINE static inline
#endif

/* The loops below have no loop-carried dependence even when an output pointer equals
   an input pointer, so the compiler may skip its run-time overlap checks. */
#if defined(__clang__)
#define NNB_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define NNB_IVDEP _Pragma("GCC ivdep")
#else
#define NNB_IVDEP
#endif

#if !defined(NNBACK_NO_TARGET_CLONES) && defined(__GNUC__) && !defined(__clang__) \
    && __GNUC__ >= 12 && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__)
#define NNB_TARGET_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NNB_TARGET_CLONES
#endif


/* ---- bit casts ---------------------------------------------------------------- */

NNB_INLINE uint32_t nnb_float_bits(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}


NNB_INLINE float nnb_float_from_bits(uint32_t bits)
{
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}


NNB_INLINE uint64_t nnb_double_bits(double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}


NNB_INLINE double nnb_double_from_bits(uint64_t bits)
{
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}


/* ---- branch-free selection ----------------------------------------------------- */

/* condition ? if_true : if_false, computed with bit masks. A plain ?: between
   floating-point values can become a branch in GCC's middle end, and under the default
   -ftrapping-math GCC then refuses to vectorize the loop, because doing both sides
   would evaluate floating-point operations that the branch skipped. */
NNB_INLINE float nnb_selectf(int condition, float if_true, float if_false)
{
    uint32_t mask = (uint32_t)0 - (uint32_t)(condition != 0);
    return nnb_float_from_bits((nnb_float_bits(if_true) & mask)
                               | (nnb_float_bits(if_false) & ~mask));
}


NNB_INLINE double nnb_select(int condition, double if_true, double if_false)
{
    uint64_t mask = (uint64_t)0 - (uint64_t)(condition != 0);
    return nnb_double_from_bits((nnb_double_bits(if_true) & mask)
                                | (nnb_double_bits(if_false) & ~mask));
}


/* ---- float -------------------------------------------------------------------- */

#define NNB_LOG2E_F 0x1.715476p+0f
/* ln2 = NNB_LN2_HI_F + NNB_LN2_LO_F. The high part has 16 significant bits, so
   n * NNB_LN2_HI_F is exact for |n| < 256. */
#define NNB_LN2_HI_F 0x1.62e4p-1f
#define NNB_LN2_LO_F 0x1.7f7d1cp-20f
/* Adding 1.5 * 2^23 to |v| < 2^22 rounds v to an integer stored in the low mantissa bits. */
#define NNB_ROUND_SHIFTER_F 0x1.8p23f


/* Split x = n * ln2 + r and return e^r - 1. *n receives the integer n as a float and
   *n_bits the same n in two's complement. */
NNB_INLINE float nnb_reduce_expm1f(float x, float *n, uint32_t *n_bits)
{
    float shifted = x * NNB_LOG2E_F + NNB_ROUND_SHIFTER_F;
    *n = shifted - NNB_ROUND_SHIFTER_F;
    *n_bits = nnb_float_bits(shifted) - nnb_float_bits(NNB_ROUND_SHIFTER_F);

    float r = (x - *n * NNB_LN2_HI_F) - *n * NNB_LN2_LO_F;

    float q = 0x1.6bebfep-10f;
    q = q * r + 0x1.1227b0p-7f;
    q = q * r + 0x1.555674p-5f;
    q = q * r + 0x1.5554b0p-3f;
    q = q * r + 0x1.fffffep-2f;
    return r + (r * r) * q;
}


/* 2^n for -126 <= n <= 127, from the two's complement bits of n. */
NNB_INLINE float nnb_pow2f(uint32_t n_bits)
{
    return nnb_float_from_bits((n_bits + 127u) << 23);
}


NNB_INLINE float nnb_expf(float x)
{
    /* e^89 overflows and e^-104 < 2^-150 rounds to 0, so n stays in [-150, 128]. */
    x = nnb_selectf(x > 89.0f, 89.0f, x);
    x = nnb_selectf(x < -104.0f, -104.0f, x);

    float n;
    uint32_t n_bits;
    float expm1_r = nnb_reduce_expm1f(x, &n, &n_bits);

    /* n1 = round(n / 2) by the same shifter, and n2 = n - n1. Both lie in [-75, 64]. */
    float half_shifted = n * 0.5f + NNB_ROUND_SHIFTER_F;
    uint32_t n1_bits = nnb_float_bits(half_shifted) - nnb_float_bits(NNB_ROUND_SHIFTER_F);
    uint32_t n2_bits = n_bits - n1_bits;

    return ((1.0f + expm1_r) * nnb_pow2f(n1_bits)) * nnb_pow2f(n2_bits);
}


/* e^x - 1 for x <= 0 or NaN. Positive x gives wrong results. */
NNB_INLINE float nnb_expm1f_nonpos(float x)
{
    /* Below -20, e^x < 2^-28 and e^x - 1 rounds to -1. */
    x = nnb_selectf(x < -20.0f, -20.0f, x);

    float n;
    uint32_t n_bits;
    float expm1_r = nnb_reduce_expm1f(x, &n, &n_bits);

    /* e^x - 1 = 2^n * (e^r - 1) + (2^n - 1), with -29 <= n <= 0. */
    float scale = nnb_pow2f(n_bits);
    return scale * expm1_r + (scale - 1.0f);
}


NNB_INLINE float nnb_sigmoidf(float x)
{
    /* e <= 1 for every x, so 1 + e cannot overflow (the sign branch of sigmoid). */
    float e = nnb_expf(-fabsf(x));
    float numerator = nnb_selectf(x >= 0.0f, 1.0f, e);
    return numerator / (1.0f + e);
}


NNB_INLINE float nnb_tanhf(float x)
{
    /* tanh|x| = (1 - e^-2|x|) / (1 + e^-2|x|) = -m / (2 + m) with m = e^-2|x| - 1. */
    float m = nnb_expm1f_nonpos(-2.0f * fabsf(x));
    return copysignf(-m / (2.0f + m), x);
}


/* ---- double ------------------------------------------------------------------- */

#define NNB_LOG2E 0x1.71547652b82fep+0
/* ln2 = NNB_LN2_HI + NNB_LN2_LO. The high part has 42 significant bits, so
   n * NNB_LN2_HI is exact for |n| < 2048. */
#define NNB_LN2_HI 0x1.62e42fefa38p-1
#define NNB_LN2_LO 0x1.ef35793c7673p-45
/* Adding 1.5 * 2^52 to |v| < 2^51 rounds v to an integer stored in the low mantissa bits. */
#define NNB_ROUND_SHIFTER 0x1.8p52


/* Split x = n * ln2 + r and return e^r - 1. *n receives the integer n as a double and
   *n_bits the same n in two's complement. */
NNB_INLINE double nnb_reduce_expm1(double x, double *n, uint64_t *n_bits)
{
    double shifted = x * NNB_LOG2E + NNB_ROUND_SHIFTER;
    *n = shifted - NNB_ROUND_SHIFTER;
    *n_bits = nnb_double_bits(shifted) - nnb_double_bits(NNB_ROUND_SHIFTER);

    double r = (x - *n * NNB_LN2_HI) - *n * NNB_LN2_LO;

    double q = 0x1.ae6baca77333bp-26;
    q = q * r + 0x1.28a20691d58efp-22;
    q = q * r + 0x1.71de88249ab9bp-19;
    q = q * r + 0x1.a019a74a72f38p-16;
    q = q * r + 0x1.a01a0174fb42ep-13;
    q = q * r + 0x1.6c16c17ee7267p-10;
    q = q * r + 0x1.1111111119010p-7;
    q = q * r + 0x1.555555555228ep-5;
    q = q * r + 0x1.5555555555539p-3;
    q = q * r + 0x1.0000000000005p-1;
    return r + (r * r) * q;
}


/* 2^n for -1022 <= n <= 1023, from the two's complement bits of n. */
NNB_INLINE double nnb_pow2(uint64_t n_bits)
{
    return nnb_double_from_bits((n_bits + 1023u) << 52);
}


NNB_INLINE double nnb_exp(double x)
{
    /* e^710 overflows and e^-746 < 2^-1076 rounds to 0, so n stays in [-1076, 1024]. */
    x = nnb_select(x > 710.0, 710.0, x);
    x = nnb_select(x < -746.0, -746.0, x);

    double n;
    uint64_t n_bits;
    double expm1_r = nnb_reduce_expm1(x, &n, &n_bits);

    /* n1 = round(n / 2) by the same shifter, and n2 = n - n1. Both lie in [-538, 512]. */
    double half_shifted = n * 0.5 + NNB_ROUND_SHIFTER;
    uint64_t n1_bits = nnb_double_bits(half_shifted) - nnb_double_bits(NNB_ROUND_SHIFTER);
    uint64_t n2_bits = n_bits - n1_bits;

    return ((1.0 + expm1_r) * nnb_pow2(n1_bits)) * nnb_pow2(n2_bits);
}


/* e^x - 1 for x <= 0 or NaN. Positive x gives wrong results. */
NNB_INLINE double nnb_expm1_nonpos(double x)
{
    /* Below -40, e^x < 2^-57 and e^x - 1 rounds to -1. */
    x = nnb_select(x < -40.0, -40.0, x);

    double n;
    uint64_t n_bits;
    double expm1_r = nnb_reduce_expm1(x, &n, &n_bits);

    /* e^x - 1 = 2^n * (e^r - 1) + (2^n - 1), with -58 <= n <= 0. */
    double scale = nnb_pow2(n_bits);
    return scale * expm1_r + (scale - 1.0);
}


NNB_INLINE double nnb_sigmoid(double x)
{
    /* e <= 1 for every x, so 1 + e cannot overflow (the sign branch of sigmoid). */
    double e = nnb_exp(-fabs(x));
    double numerator = nnb_select(x >= 0.0, 1.0, e);
    return numerator / (1.0 + e);
}


NNB_INLINE double nnb_tanh(double x)
{
    /* tanh|x| = (1 - e^-2|x|) / (1 + e^-2|x|) = -m / (2 + m) with m = e^-2|x| - 1. */
    double m = nnb_expm1_nonpos(-2.0 * fabs(x));
    return copysign(-m / (2.0 + m), x);
}


/* ---- ReLU and its derivative mask --------------------------------------------- */

/* x <= 0 is false for NaN, so NaN passes through. */
NNB_INLINE float nnb_reluf(float x) { return nnb_selectf(x <= 0.0f, 0.0f, x); }
NNB_INLINE double nnb_relu(double x) { return nnb_select(x <= 0.0, 0.0, x); }

/* 1 where y > 0, 0 where y <= 0, and NaN (y itself) where y is NaN. */
NNB_INLINE float nnb_relu_maskf(float y)
{
    return nnb_selectf(y > 0.0f, 1.0f, nnb_selectf(y <= 0.0f, 0.0f, y));
}


NNB_INLINE double nnb_relu_mask(double y)
{
    return nnb_select(y > 0.0, 1.0, nnb_select(y <= 0.0, 0.0, y));
}


/* ---- array loops -------------------------------------------------------------- */

NNB_TARGET_CLONES
static inline void nnb_exp_f32(const float *x, float *y, ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) y[i] = nnb_expf(x[i]);
}


NNB_TARGET_CLONES
static inline void nnb_exp_f64(const double *x, double *y, ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) y[i] = nnb_exp(x[i]);
}


NNB_TARGET_CLONES
static inline void nnb_sigmoid_forward_f32(const float *x, float *y, ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) y[i] = nnb_sigmoidf(x[i]);
}


NNB_TARGET_CLONES
static inline void nnb_sigmoid_forward_f64(const double *x, double *y, ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) y[i] = nnb_sigmoid(x[i]);
}


NNB_TARGET_CLONES
static inline void nnb_sigmoid_backward_f32(const float *y, const float *dy, float *dx,
                                            ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}


NNB_TARGET_CLONES
static inline void nnb_sigmoid_backward_f64(const double *y, const double *dy, double *dx,
                                            ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1.0 - y[i]);
}


NNB_TARGET_CLONES
static inline void nnb_tanh_forward_f32(const float *x, float *y, ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) y[i] = nnb_tanhf(x[i]);
}


NNB_TARGET_CLONES
static inline void nnb_tanh_forward_f64(const double *x, double *y, ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) y[i] = nnb_tanh(x[i]);
}


NNB_TARGET_CLONES
static inline void nnb_tanh_backward_f32(const float *y, const float *dy, float *dx,
                                         ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}


NNB_TARGET_CLONES
static inline void nnb_tanh_backward_f64(const double *y, const double *dy, double *dx,
                                         ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = dy[i] * (1.0 - y[i] * y[i]);
}


NNB_TARGET_CLONES
static inline void nnb_relu_forward_f32(const float *x, float *y, ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) y[i] = nnb_reluf(x[i]);
}


NNB_TARGET_CLONES
static inline void nnb_relu_forward_f64(const double *x, double *y, ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) y[i] = nnb_relu(x[i]);
}


NNB_TARGET_CLONES
static inline void nnb_relu_backward_f32(const float *y, const float *dy, float *dx,
                                         ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = dy[i] * nnb_relu_maskf(y[i]);
}


NNB_TARGET_CLONES
static inline void nnb_relu_backward_f64(const double *y, const double *dy, double *dx,
                                         ptrdiff_t n)
{
    NNB_IVDEP
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = dy[i] * nnb_relu_mask(y[i]);
}

/* ---- sums --------------------------------------------------------------------- */

/* Number of independent partial sums (lanes) of an array sum. A fixed set of lanes
   is a summation order that GCC can vectorize without -fassociative-math, and it
   shortens each lane's chain of additions to n / NNB_SUM_LANES terms.
   nnb_combine_lanes adds exactly 16. */
#define NNB_SUM_LANES 16

/* Columns per block of nnb_sum_columns_f32, whose double accumulators (4 KiB)
   live on the stack. */
#define NNB_COLUMN_BLOCK 512


/* lanes[0] + ... + lanes[15], added pairwise, so that each step is one vector addition. */
NNB_INLINE double nnb_combine_lanes(double *lanes)
{
    for (int k = 0; k < 8; k++) lanes[k] += lanes[k + 8];
    for (int k = 0; k < 4; k++) lanes[k] += lanes[k + 4];
    for (int k = 0; k < 2; k++) lanes[k] += lanes[k + 2];
    return lanes[0] + lanes[1];
}


/* sum_i x[i] for i < n, in double over the NNB_SUM_LANES partial sums. Any n works,
   but nnb_sum_f32 and nnb_sum_f64 call these only from NNB_SUM_LANES terms on. */
NNB_TARGET_CLONES
static inline double nnb_sum_lanes_f32(const float *x, ptrdiff_t n)
{
    double lanes[NNB_SUM_LANES] = {0};
    ptrdiff_t i = 0;

    for (; i + NNB_SUM_LANES <= n; i += NNB_SUM_LANES)
        for (int k = 0; k < NNB_SUM_LANES; k++) lanes[k] += (double)x[i + k];

    double total = nnb_combine_lanes(lanes);
    for (; i < n; i++) total += (double)x[i];
    return total;
}


NNB_TARGET_CLONES
static inline double nnb_sum_lanes_f64(const double *x, ptrdiff_t n)
{
    double lanes[NNB_SUM_LANES] = {0};
    ptrdiff_t i = 0;

    for (; i + NNB_SUM_LANES <= n; i += NNB_SUM_LANES)
        for (int k = 0; k < NNB_SUM_LANES; k++) lanes[k] += x[i + k];

    double total = nnb_combine_lanes(lanes);
    for (; i < n; i++) total += x[i];
    return total;
}


/* sum_i x[i] for i < n. From NNB_SUM_LANES terms on, the sum is accumulated in
   double, with the first-order error bound (n / NNB_SUM_LANES + 19) * 2^-53 *
   sum_i |x[i]|: each lane adds n / 16 terms, the combining 4 levels and the tail
   at most 15 more. Shorter arrays are summed inline, in order and in float (at
   most 15 roundings of 2^-24), which keeps a call to a target clone and two
   conversions off the dependency chain of a short softmax row. NaN and
   infinities give the IEEE result. */
NNB_INLINE double nnb_sum_f32(const float *x, ptrdiff_t n)
{
    if (n >= NNB_SUM_LANES) return nnb_sum_lanes_f32(x, n);

    float total = 0.0f;
    for (ptrdiff_t i = 0; i < n; i++) total += x[i];
    return total;
}


/* sum_i x[i] for i < n, in the same order as nnb_sum_f32. */
NNB_INLINE double nnb_sum_f64(const double *x, ptrdiff_t n)
{
    if (n >= NNB_SUM_LANES) return nnb_sum_lanes_f64(x, n);

    double total = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) total += x[i];
    return total;
}


/* sums[j] = sum_i x[i * n_columns + j] for j < n_columns, over the n_rows rows of a
   row-major matrix. Each column is accumulated in double and rounded to float once.
   The columns are processed in blocks of NNB_COLUMN_BLOCK, and the inner loop reads
   contiguous memory. n_rows == 0 gives zeros. sums must not overlap x. */
NNB_TARGET_CLONES
static inline void nnb_sum_columns_f32(const float *x, ptrdiff_t n_rows,
                                       ptrdiff_t n_columns, float *sums)
{
    double partial[NNB_COLUMN_BLOCK];

    for (ptrdiff_t start = 0; start < n_columns; start += NNB_COLUMN_BLOCK) {
        ptrdiff_t count = n_columns - start;
        if (count > NNB_COLUMN_BLOCK) count = NNB_COLUMN_BLOCK;

        for (ptrdiff_t k = 0; k < count; k++) partial[k] = 0.0;

        /* Four rows per pass, added in double before they reach partial, so
           that partial is loaded and stored once per four rows. */
        ptrdiff_t i = 0;
        for (; i + 4 <= n_rows; i += 4) {
            const float *row0 = x + i * n_columns + start;
            const float *row1 = row0 + n_columns;
            const float *row2 = row1 + n_columns;
            const float *row3 = row2 + n_columns;
            for (ptrdiff_t k = 0; k < count; k++)
                partial[k] += ((double)row0[k] + (double)row1[k])
                              + ((double)row2[k] + (double)row3[k]);
        }
        for (; i < n_rows; i++) {
            const float *row = x + i * n_columns + start;
            for (ptrdiff_t k = 0; k < count; k++) partial[k] += (double)row[k];
        }
        for (ptrdiff_t k = 0; k < count; k++) sums[start + k] = (float)partial[k];
    }
}

#endif /* NNBACK_FASTMATH_H */
