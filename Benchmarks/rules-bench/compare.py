"""Measures the two-clause rule in Google's CEL (cel-expr-python, the C++ evaluator) and in
OPA Rego (regopy, Microsoft's rego-cpp), then prints one table with the Swift figures.

Both run through their Python bindings, so each figure includes the cost of one call from
Python (measured and shown: an empty Python loop iteration). Usage: compare.py SWIFT_RESULTS
"""
import sys
import time

from cel_expr_python import cel
from regopy import Interpreter

swift = dict(line.strip().split("=", 1) for line in open(sys.argv[1]) if "=" in line)

TOKEN = {"role": "operator", "allowed": ["restart", "reboot", "firmware.update"], "sub": "alice"}
ALLOWED = TOKEN["allowed"]


def per_call_ns(fn, n):
    for _ in range(n // 10):
        fn()
    best = None
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        elapsed = (time.perf_counter_ns() - start) / n
        best = elapsed if best is None else min(best, elapsed)
    return best


empty_ns = per_call_ns(lambda: None, 200_000)

env = cel.NewEnv(variables={
    "token": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
    "allowed": cel.Type.List(cel.Type.STRING),
})
expression = env.compile('token.role == "operator" && "reboot" in allowed')
activation = env.Activation({"token": TOKEN, "allowed": ALLOWED})
assert expression.eval(activation).value() is True
cel_ns = per_call_ns(lambda: expression.eval(activation), 100_000)

rego = Interpreter()
rego.add_module("bench", """package bench
import rego.v1
allow if {
    input.token.role == "operator"
    "reboot" in input.allowed
}
""")
rego.set_input({"token": TOKEN, "allowed": ALLOWED})
assert "true" in str(rego.query("data.bench.allow"))
rego_query_ns = per_call_ns(lambda: rego.query("data.bench.allow"), 200)
try:
    bundle = rego.build("data.bench.allow")
    assert "true" in str(rego.query_bundle(bundle))
    rego_bundle_ns = per_call_ns(lambda: rego.query_bundle(bundle), 2_000)
except Exception as error:  # older regopy without bundles
    rego_bundle_ns = None
    print(f"(rego bundles unavailable: {error})")


def us(ns):
    return f"{float(ns) / 1000:.2f} µs"


rows = [
    ("(a) two-clause rule, gatehouse (allowed = token claim list)", f"{swift['a_ns']} ns", "goal < 100 ns"),
    ("(a) two-clause rule, gatehouse (allowed = constant list, folded)", f"{swift['a_const_ns']} ns", ""),
    ("(a) same expression, CEL C++ via cel-expr-python", f"{cel_ns:.0f} ns", "includes one Python call"),
    ("(a) same rule, Rego via regopy query()", us(rego_query_ns), "compiles the query each call"),
]
if rego_bundle_ns is not None:
    rows.append(("(a) same rule, Rego via regopy bundle", us(rego_bundle_ns), "precompiled bundle"))
rows += [
    ("    (one empty Python call, for scale)", f"{empty_ns:.0f} ns", ""),
    ("    cel-go, published", "123–357 ns", "github.com/google/cel-go benchmarks"),
    ("(b) 50-rule site policy, 10,000 inputs: p50", f"{swift['b_p50_ns']} ns", ""),
    ("(b) p99", f"{swift['b_p99_ns']} ns", "goal < 2 µs"),
    ("(b) p99.9", f"{swift['b_p999_ns']} ns", ""),
    ("(b) mean (back to back, no per-call timer)", f"{swift['b_mean_ns']} ns", ""),
    ("(c) check + compile 1,000 rules", f"{swift['c_compile_ms']} ms", f"goal < 100 ms; {swift['c_source_bytes']} bytes of rules"),
    ("(c) heap held by the compiled 1,000-rule policy", f"{int(swift['c_memory_bytes']) / 1024:.0f} KiB", "mallinfo2, excluding the source text"),
]
width = max(len(r[0]) for r in rows)
print(f"{'measure'.ljust(width)}  {'result':>12}  note")
print("-" * (width + 40))
for name, value, note in rows:
    print(f"{name.ljust(width)}  {value:>12}  {note}")
