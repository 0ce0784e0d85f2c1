"""The one tolerance table of the test suite (docs/tolerances.md explains each bound).

A comparison passes when  max |actual - reference| <= bound * max(1, max |reference|).
"""

TOLERANCES = {
    # float32 compute against transformers in float32: summation order differs (BLAS blocking,
    # erf and exp implementations), so errors of a few float32 ulp grow through the layers.
    "float32": 1e-4,
    # The same, for single array functions against their torch twin (no depth to grow through).
    "op": 1e-5,
    # Our erf against math.erf (float64): 2e-7 absolute, about 3 float32 ulp (measured 1.96e-7).
    "erf": 2.5e-7,
    # Preprocessing where the arithmetic cannot be bit-exact (see docs/preprocessing.md).
    "pixels": 1e-6,
    # float16 compute (npclip dtype="float16") against transformers in float32 or float16: measured up to
    # 7.7e-3 on the tiny and head-width-64 configs; float16's ulp is 1e-3 near 1 and grows through layers.
    "float16": 2e-2,
    # A fused float16 GPU kernel against its readable float32-accumulating twin (one op, no depth).
    "op-float16": 4e-3,
}
