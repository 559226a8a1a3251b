"""On a process's PYTHONPATH, makes importing any ASR code fail: src.asr, FunASR, torch.

tests/system/test_second_engine.py starts its workers with it, so "the job core needs no ASR
code" is checked by the interpreter, not by reading the code.
"""

import sys
from importlib.machinery import ModuleSpec

BLOCKED = ("src.asr", "funasr", "torch", "torchaudio", "modelscope")


class BlockAsr:
    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} imported by a process that must run without ASR code")
        return None


sys.meta_path.insert(0, BlockAsr())
