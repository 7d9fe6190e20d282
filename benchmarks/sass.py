"""What the GPU backends' generated machine code (SASS) contains, read without a GPU: registers,
spills, shared memory and occupancy from cuobjdump's resource usage, and the instructions of the
main path by class from nvdisasm's listing.  The tools are the cuobjdump and nvdisasm that
triton ships (or $CUDA_HOME/bin's).  Used by benchmarks/gpu_code_stats.py and
tests/test_gpu_code.py.

The main path, counted statically: the innermost loop that stores to global memory (the CUDA
kernels' step loop; a Triton program stores outside any loop, so its whole body), and through
it the path that (1) touches local memory and calls subroutines least (not the slow paths of
libdevice's sin and cos for huge arguments, or of IEEE division and square root), then (2) has
the fewest predicated memory accesses (a whole step, not the per-element bounds checks of a
ragged one), then (3) runs the most Philox multiplies (IMAD.WIDE.U32 / IMAD.HI: the noise is
on), then (4) has the fewest instructions (the log-uniform prior, no mask, no unit mean; not the
rare paths, which are longer).  Fewest conditional branches came before (4) until the
log-uniform KL's one log per step (csrc/infodrop/elementwise.h minus_log_of_product) gave that
path a branch more than the log-normal prior's: the listing of every kernel counted the same
without the rule before that change.  Predicated accesses come before
the multiplies because a ragged step's 64-bit element addresses are IMAD.WIDE.U32 too: with
the whole and the ragged step compiled apart (csrc/cuda/kernels.cu), the ragged one had more.
Instructions outside the loop (prologue, per-sample reductions) are left out, as they are
amortised over a whole sample.
"""

import collections
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

# Instruction classes, by opcode (the SASS mnemonic before the first dot).
_FP32 = {"FFMA", "FADD", "FMUL", "FFMA32I", "FADD32I", "FMUL32I", "HFMA2", "HADD2", "HMUL2"}
_FP64 = {"DFMA", "DADD", "DMUL", "DSETP", "DMNMX"}
_MUFU = {"MUFU"}
_CONV = {"F2F", "F2I", "I2F", "FRND", "F2I64", "I2F64"}
_MEM = {"LDG", "STG", "LD", "ST", "LDS", "STS", "LDL", "STL", "LDC", "ATOM", "ATOMG", "ATOMS",
        "RED", "REDG", "LDSM"}
_ALU = {"IADD3", "IADD", "VIADD", "LOP3", "LOP", "SHF", "SHL", "SHR", "ISETP", "FSETP", "SEL",
        "FSEL", "FMNMX", "IMNMX", "VIMNMX", "PRMT", "MOV", "LEA", "IABS", "POPC", "FLO", "BREV",
        "P2R", "R2P", "PLOP3", "FCHK", "I2FP", "F2FP", "HSETP2", "HMNMX2", "FSWZADD", "IDP"}
CLASSES = ("fp32", "alu", "imad", "mufu", "conv", "fp64", "mem", "other")


def classify(opcode: str) -> str:
    base = opcode.split(".")[0]
    if base == "IMAD":
        return "imad"  # integer multiply-add pipe; includes IMAD.MOV, the compiler's move
    for name, members in (("fp32", _FP32), ("fp64", _FP64), ("mufu", _MUFU), ("conv", _CONV),
                          ("mem", _MEM), ("alu", _ALU)):
        if base in members:
            return name
    return "other"  # control, special registers, shuffles, uniform datapath, barriers


def tool(name: str) -> str:
    """Path of cuobjdump / nvdisasm: triton's copy, else $CUDA_HOME/bin's, else PATH's."""
    candidates = []
    try:
        import triton

        candidates.append(pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)
    except ImportError:
        pass
    candidates.append(pathlib.Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / name)
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (install triton or the CUDA toolkit)")
    return found


@dataclasses.dataclass
class Resources:
    registers: int
    stack: int  # bytes per thread of stack frame
    local: int  # bytes per thread of local memory: spills (and local arrays)
    shared: int  # bytes of static shared memory per block


def resource_usage(binary: str) -> dict:
    """{mangled kernel name: Resources} of each kernel in a cubin or a library with cubins;
    for a library, keys are (arch, name) with arch like "sm_90"."""
    out = subprocess.run([tool("cuobjdump"), "--dump-resource-usage", binary], check=True,
                         capture_output=True, text=True).stdout
    result, arch, name = {}, None, None
    for line in out.splitlines():
        match = re.search(r"arch = (sm_\d+)", line)
        if match:
            arch = match.group(1)
        match = re.match(r"\s*Function (\S+):", line)
        if match:
            name = match.group(1)
        match = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
        if match and name:
            regs, stack, shared, local = map(int, match.groups())
            result[(arch, name) if not binary.endswith(".cubin") else name] = Resources(
                regs, stack, local, shared)
    return result


def extract_cubins(library: str, directory: str) -> dict:
    """{"sm_80": path, ...}: the cubins embedded in a shared library."""
    subprocess.run([tool("cuobjdump"), "-xelf", "all", os.path.abspath(library)], check=True,
                   capture_output=True, cwd=directory)
    return {re.search(r"(sm_\d+)\.cubin$", f).group(1): os.path.join(directory, f)
            for f in os.listdir(directory) if f.endswith(".cubin")}


def write_cubin(data: bytes) -> str:
    handle = tempfile.NamedTemporaryFile(suffix=".cubin", delete=False)
    with handle:
        handle.write(data)
    return handle.name


@dataclasses.dataclass
class Instruction:
    address: int
    opcode: str
    predicated: bool
    target: str = None  # branch target label


_LINE = re.compile(r"/\*([0-9a-f]+)\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*);")


def disassemble(cubin: str) -> dict:
    """{kernel name: (instructions, {label: index})} of a cubin; a kernel's code ends where its
    internal subroutines ($__internal_...) begin."""
    text = subprocess.run([tool("nvdisasm"), "-c", cubin], check=True, capture_output=True,
                          text=True).stdout
    kernels, current = {}, None
    for line in text.splitlines():
        header = re.match(r"\s*\.text\.(\S+):$", line)
        if header:
            current = kernels.setdefault(header.group(1), ([], {}))
            continue
        if current is None:
            continue
        if line.startswith("$") or line.strip().startswith(".weak"):
            current = None  # a subroutine of this kernel
            continue
        label = re.match(r"(\.L_x_\d+):", line)
        if label:
            current[1][label.group(1)] = len(current[0])
            continue
        match = _LINE.search(line)
        if match:
            address, predicate, opcode, operands = match.groups()
            if opcode == "NOP":
                continue
            target = re.search(r"`\((\.L_x_\d+)\)", operands)
            # "@P0 BRA" and "BRA P1, `(...)" are conditional
            conditional = bool(predicate and "PT" != predicate.strip().lstrip("@!")) or (
                opcode.startswith("BRA") and "," in operands)
            current[0].append(Instruction(int(address, 16), opcode, conditional,
                                          target.group(1) if target else None))
    return kernels


def _jumps(ins) -> bool:
    """Whether `ins` goes to a label of its kernel: a BRA, or a CALL.REL.NOINC to a label, not to
    a subroutine, which ptxas for sm_80 uses to leave a loop (`@P0 CALL.REL.NOINC .L_x_7`, where
    sm_90 code has `@P0 BRA`); read as a call, the step loop's exit was lost, the loop around it
    (one sample, with its partial-sum store) looked smaller than it, and --arch 80 counted that."""
    return bool(ins.target) and ins.opcode.startswith(("BRA", "CALL.REL.NOINC"))


def _blocks(instructions, labels):
    """Basic blocks as (start, end) index ranges and their successors."""
    starts = {0} | set(labels.values())
    for i, ins in enumerate(instructions):
        if ins.target or ins.opcode.startswith(("EXIT", "RET", "BRA")):
            starts.add(i + 1)
    starts = sorted(s for s in starts if s < len(instructions))
    ranges = list(zip(starts, starts[1:] + [len(instructions)]))
    index_of = {start: b for b, (start, _) in enumerate(ranges)}
    successors = []
    for _, end in ranges:
        last = instructions[end - 1]
        succ = []
        if _jumps(last):
            succ.append(index_of[labels[last.target]])
        ends = last.opcode.startswith(("EXIT", "RET", "BRA")) or _jumps(last)
        if (not ends or last.predicated) and end in index_of:
            succ.append(index_of[end])
        successors.append(succ)
    return ranges, successors


@dataclasses.dataclass
class PathCount:
    counts: dict  # instructions per class along the path
    opcodes: collections.Counter  # instructions per opcode along the path
    loop: bool  # a loop body (CUDA), or the whole kernel (no loop: Triton)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def main_path(instructions, labels) -> PathCount:
    """Instruction classes along the main path (module docstring)."""
    ranges, successors = _blocks(instructions, labels)
    predecessors = {b: [p for p, s in enumerate(successors) if b in s] for b in range(len(ranges))}
    back_edges = [(t, h) for t, succ in enumerate(successors) for h in succ if h <= t]
    loops = []
    for tail, head in back_edges:
        body, stack = {head, tail}, [tail]
        while stack:
            for p in predecessors[stack.pop()]:
                if p not in body:
                    body.add(p)
                    stack.append(p)
        stores = any(instructions[i].opcode.startswith("STG")
                     for b in body for i in range(*ranges[b]))
        if stores:
            loops.append((len(body), head, body, {t for t, h in back_edges if h == head}))
    if loops:
        _, entry, body, exits = min(loops, key=lambda loop: loop[0])
    else:
        entry, body, exits = 0, set(range(len(ranges))), None

    def block_counts(b):
        counts = dict.fromkeys(CLASSES, 0)
        philox = local = ragged = 0
        counts["opcodes"] = collections.Counter(ins.opcode for ins in instructions[slice(*ranges[b])])
        for ins in instructions[slice(*ranges[b])]:
            cls = classify(ins.opcode)
            counts[cls] += 1
            philox += ins.opcode.startswith(("IMAD.WIDE.U32", "IMAD.HI"))
            # the rare paths: local memory, subroutine calls (IEEE division's and sqrt's
            # slow paths, whose few call-site instructions would otherwise look cheap)
            local += ins.opcode.startswith(("LDL", "STL")) or (
                ins.opcode.startswith("CALL") and not _jumps(ins))
            ragged += ins.predicated and cls == "mem"
        return counts, (local, ragged, -philox, sum(counts[c] for c in CLASSES))

    # Lexicographic shortest path on the DAG (blocks in address order, back edges dropped).
    best = {entry: block_counts(entry)}
    finals = []
    for b in sorted(body):
        if b not in best:
            continue
        counts, key = best[b]
        is_exit = (b in exits) if exits is not None else not successors[b]
        if is_exit:
            finals.append((key, counts))
        for s in successors[b]:
            if s <= b or s not in body:
                continue
            add_counts, add_key = block_counts(s)
            new = ({c: counts[c] + add_counts[c] for c in CLASSES + ("opcodes",)},
                   tuple(x + y for x, y in zip(key, add_key)))
            if s not in best or new[1] < best[s][1]:
                best[s] = new
    key, counts = min(finals, key=lambda final: final[0])
    opcodes = counts.pop("opcodes")
    return PathCount(counts, opcodes, bool(loops))


# Per SM and clock (CUDA C++ Programming Guide, "Arithmetic Instructions", compute capability
# 8.0 and 9.0): issue (4 schedulers x 32 threads), FP32 lanes, IMAD (the FMA pipe's heavy half),
# integer and logic ALU, MUFU and conversions, FP64.
PIPES = {
    80: dict(issue=128, fp32=64, imad=64, alu=64, xu=16, fp64=32),
    90: dict(issue=128, fp32=128, imad=64, alu=64, xu=16, fp64=64),
}
SM_LIMITS = {  # registers, threads, blocks, shared bytes per SM; shared reserved per block
    80: dict(registers=65536, threads=2048, blocks=32, shared=167936, reserved=1024),
    90: dict(registers=65536, threads=2048, blocks=32, shared=233472, reserved=1024),
}


def cycles_per_sm(counts: dict, capability: int) -> float:
    """SM clocks per thread-instruction stream of `counts`, the busiest pipe or issue."""
    p = PIPES[capability]
    fma = counts["fp32"] + counts["imad"]
    return max(sum(counts.values()) / p["issue"], fma / max(p["fp32"], p["imad"]),
               counts["imad"] / p["imad"], counts["alu"] / p["alu"],
               (counts["mufu"] + counts["conv"]) / p["xu"], counts["fp64"] / p["fp64"])


def mufu_cycles_per_sm(counts: dict, capability: int) -> float:
    """SM clocks per thread-instruction stream of `counts` on the special-function unit alone
    (MUFU and conversions share it): the MUFU floor, which cycles_per_sm includes."""
    return (counts["mufu"] + counts["conv"]) / PIPES[capability]["xu"]


def occupancy(registers: int, threads: int, shared: int, capability: int) -> float:
    """Theoretical occupancy: resident warps / maximum warps per SM."""
    limit = SM_LIMITS[capability]
    warps = -(-threads // 32)
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = limit["registers"] // (regs_per_warp * warps)
    by_threads = limit["threads"] // threads
    by_shared = limit["shared"] // (shared + limit["reserved"])
    blocks = min(by_regs, by_threads, by_shared, limit["blocks"])
    return blocks * warps / (limit["threads"] // 32)


def ptxas_spills(ptx: str) -> tuple:
    """(spill store bytes, spill load bytes, stack frame bytes) that ptxas -v reports for the
    kernel of ``ptx`` at its .target: a stack frame alone is no spill (libdevice's sin and cos
    keep a small array there for their slow path), spill stores and loads are."""
    arch = re.search(r"\.target\s+(sm_\w+)", ptx).group(1)
    with tempfile.TemporaryDirectory() as directory:
        source = os.path.join(directory, "kernel.ptx")
        with open(source, "w") as f:
            f.write(ptx)
        log = subprocess.run([tool("ptxas"), "-v", f"-arch={arch}", source, "-o",
                              os.path.join(directory, "kernel.cubin")], check=True,
                             capture_output=True, text=True).stderr
    match = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      log)
    stack, stores, loads = map(int, match.groups())
    return stores, loads, stack
