"""TF32 off for PyTorch's float32 matrix products (plain fp32 FMA arithmetic, as ours), through whichever API the
installed PyTorch has.

PyTorch 2.9 added per-backend `fp32_precision` settings, and later versions raise a RuntimeError when the legacy
flags (`allow_tf32`, `set_float32_matmul_precision`) and the new ones have been mixed and one of them is read. The
GPU machines run PyTorch 2.11, this machine Debian's 1.13, which has only the legacy flags. So: the new API where it
exists, the legacy flags before it, never both.
"""


def _has_precision_api(torch):
    # Older versions answer an unknown attribute of torch.backends.cuda.matmul with an AssertionError, not an
    # AttributeError, so hasattr() cannot ask.
    try:
        return isinstance(getattr(torch.backends.cuda.matmul, "fp32_precision"), str)
    except Exception:  # noqa: BLE001 - any failure means the attribute is not there
        return False


def disable_tf32(torch):
    """Makes float32 matmuls (and cuDNN convolutions and RNNs) use IEEE float32, not TF32."""
    if _has_precision_api(torch):
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cudnn.rnn.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")


def tf32_enabled(torch):
    """Whether float32 matmuls may use TF32, read through the same API that disable_tf32 set."""
    if _has_precision_api(torch):
        return torch.backends.cuda.matmul.fp32_precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)
