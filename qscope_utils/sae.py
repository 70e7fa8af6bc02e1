"""TopK sparse autoencoders in the Qwen-Scope format, and their loader (docs/CONVENTIONS.md §2).

A layer file ``layer{n}.sae.pt`` is a plain dict of four float32 tensors::

    W_enc (d_sae, d_model)   b_enc (d_sae,)   W_dec (d_model, d_sae)   b_dec (d_model,)

Encode: ``z = TopK_k(ReLU(x @ W_enc.T + b_enc))`` on the raw residual (no b_dec subtraction,
no normalisation), in float32. Decode: ``x_hat = z @ W_dec.T + b_dec``. Feature i's direction is
the column ``W_dec[:, i]``. k is not in the file: it comes from the group name.

Bad input fails loudly: a truncated or corrupt layer file raises :class:`~qscope_utils.atomic.CorruptFileError`
naming the file and the command that replaces it; a layer missing offline raises one line with the exact
``hf download`` command; NaN or inf activations reaching ``encode`` raise :class:`NonFiniteActivationsError`
naming the layer and the number of bad tokens (one ``isfinite`` reduction per call).

Memory promise (checkable): :class:`SAELoader` holds at most ``cache_size`` layers and drops one
before reading the next; sections loop layers outside data, so a notebook reads each layer file
once. :func:`track_loads` / :func:`load_stats` count the file reads per (repo, layer) and the peak
number of layers alive (``QSCOPE_SAE_STATS=<path>`` writes the same to a JSON file).
"""
from __future__ import annotations

import contextlib
import gc
import os
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .atomic import CorruptFileError, atomic_torch_save, atomic_write_json
from .hub import hf_download_command, hub_file, missing_lines
from .registry import SAEGroup, get_group, layer_filename

__all__ = ["TopKSAE", "SparseCodes", "save_layer_file", "load_layer_file", "SAELoader", "LayerView", "SAE_KEYS",
           "NonFiniteActivationsError", "LoadStats", "load_stats", "track_loads"]


class NonFiniteActivationsError(FloatingPointError):
    """NaN or inf in the activations given to an SAE (they would silently become NaN codes)."""

SAE_KEYS = ("W_enc", "W_dec", "b_enc", "b_dec")


@dataclass
class SparseCodes:
    """Top-k codes of N tokens: ``indices`` (N, k) int64 latent ids, ``values`` (N, k) float32 >= 0.

    Entries with value 0 are latents that made the top-k but were zeroed by the ReLU.
    """

    indices: torch.Tensor
    values: torch.Tensor
    d_sae: int

    def to_dense(self) -> torch.Tensor:
        """(N, d_sae) dense codes."""
        out = self.values.new_zeros(self.values.shape[0], self.d_sae)
        return out.scatter_(1, self.indices, self.values)

    def active(self) -> torch.Tensor:
        """(N, k) bool: which of the k slots are truly active (value > 0)."""
        return self.values > 0


class TopKSAE(nn.Module):
    """One layer's TopK SAE. Shapes follow the release: W_enc (d_sae, d_model), W_dec (d_model, d_sae)."""

    def __init__(self, d_model: int, d_sae: int, k: int, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        if not 0 < k <= d_sae:
            raise ValueError(f"k={k} must be in 1..d_sae={d_sae}")
        self.d_model, self.d_sae, self.k = d_model, d_sae, k
        self.layer: int | None = None    # set by SAELoader; named in errors
        kw = {"dtype": dtype, "device": device}
        self.W_enc = nn.Parameter(torch.empty(d_sae, d_model, **kw))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, **kw))
        # W_dec is (d_model, d_sae) as in the release, but stored column-major (a transposed view of a
        # contiguous (d_sae, d_model) buffer) so that W_dec.T rows are contiguous: sparse decode gathers
        # k rows of W_dec.T without copying the decoder (20x faster than a dense decode at 32K x 2048).
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_model, **kw).T)
        self.b_dec = nn.Parameter(torch.zeros(d_model, **kw))
        nn.init.kaiming_uniform_(self.W_dec, a=5 ** 0.5)
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=0, keepdim=True)
            self.W_enc.copy_(self.W_dec.T)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_state_dict(cls, sd: dict, k: int, dtype: torch.dtype = torch.float32, device=None) -> "TopKSAE":
        _check_keys(sd)
        d_sae, d_model = sd["W_enc"].shape
        sae = cls(d_model, d_sae, k, dtype=dtype, device="meta")
        tensors = {n: sd[n].to(dtype) for n in SAE_KEYS}
        tensors["W_dec"] = tensors["W_dec"].T.contiguous().T  # column-major, see __init__
        sae.load_state_dict(tensors, assign=True)
        return sae.to(device) if device is not None else sae

    # ---------------------------------------------------------------- encode
    def _check_input(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"activations have last dimension {x.shape[-1]} but this SAE expects d_model={self.d_model}: "
                f"pair the SAE with its backbone (hidden_size {self.d_model}) and hook the residual stream"
            )
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).reshape(-1, x.shape[-1]).any(-1).sum())
            n = x.numel() // x.shape[-1]
            where = f"layer {self.layer}" if self.layer is not None else "this layer"
            raise NonFiniteActivationsError(
                f"activations reaching the SAE of {where} hold NaN or inf in {bad} of {n} tokens: the codes "
                f"would be NaN. Fix: load the backbone in float32 or bfloat16 (float16 overflows in large "
                f"residuals) and check the inputs and any steering or splicing hook upstream of this layer")

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``x @ W_enc.T + b_enc`` (..., d_sae) in the SAE dtype (no ReLU, no top-k)."""
        self._check_input(x)
        return F.linear(x.to(self.W_enc.dtype), self.W_enc, self.b_enc)

    def encode_sparse(self, x: torch.Tensor) -> SparseCodes:
        """Top-k codes of x (..., d_model) flattened to N = prod(...) tokens."""
        pre = self.pre_acts(x).reshape(-1, self.d_sae)
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        # TopK(ReLU(pre)) == ReLU(TopK(pre)): ReLU is monotone, so selecting first is exact.
        return SparseCodes(idx, vals.clamp_min_(0), self.d_sae)

    def encode(self, x: torch.Tensor, return_pre: bool = False):
        """Dense codes z (..., d_sae); with ``return_pre`` also the pre-activations."""
        pre = self.pre_acts(x)
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        z = torch.zeros_like(pre).scatter_(-1, idx, vals.clamp_min(0))
        return (z, pre) if return_pre else z

    # ---------------------------------------------------------------- decode
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x_hat (..., d_model) from dense codes z (..., d_sae)."""
        return F.linear(z, self.W_dec, self.b_dec)

    def decode_sparse(self, codes: SparseCodes) -> torch.Tensor:
        """x_hat (N, d_model) from sparse codes, gathering only the k active columns per token.

        Uses ``embedding_bag`` over rows of W_dec.T: O(N k d_model) work, no dense (N, d_sae).
        """
        W = self.W_dec.T  # (d_sae, d_model); contiguous given the column-major storage
        if not W.is_contiguous():
            W = W.contiguous()
        out = F.embedding_bag(codes.indices, W, per_sample_weights=codes.values.to(W.dtype), mode="sum")
        return out + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction x_hat with the same shape as x (float32)."""
        shape = x.shape
        return self.decode_sparse(self.encode_sparse(x)).reshape(shape[:-1] + (self.d_model,))

    # ---------------------------------------------------------------- feature directions
    def direction(self, feature: int | list[int]) -> torch.Tensor:
        """Raw decoder column(s) ``W_dec[:, i]``: (d_model,) or (len, d_model)."""
        ids = [feature] if isinstance(feature, int) else list(feature)
        for i in ids:
            if not 0 <= int(i) < self.d_sae:
                raise IndexError(f"feature id {i} is out of range for an SAE with d_sae={self.d_sae}")
        cols = self.W_dec[:, ids].T
        return cols[0] if isinstance(feature, int) else cols

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8)


def _check_keys(sd: dict, where: str = "SAE state dict") -> None:
    missing = [k for k in SAE_KEYS if k not in sd]
    if missing:
        raise KeyError(f"{where} lacks {missing}; a Qwen-Scope layer file holds exactly {list(SAE_KEYS)}")
    d_sae, d_model = sd["W_enc"].shape
    want = {"W_enc": (d_sae, d_model), "W_dec": (d_model, d_sae), "b_enc": (d_sae,), "b_dec": (d_model,)}
    for k, shp in want.items():
        if tuple(sd[k].shape) != shp:
            raise ValueError(f"{where}: {k} has shape {tuple(sd[k].shape)}, expected {shp} "
                             f"(W_enc is (d_sae, d_model), W_dec is (d_model, d_sae))")


def save_layer_file(sae: TopKSAE, path: str | os.PathLike) -> Path:
    """Write a layer file exactly like the release: dict of the 4 float32 tensors, torch.save."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: getattr(sae, k).detach().to("cpu", torch.float32).contiguous().clone() for k in SAE_KEYS}
    return atomic_torch_save(sd, path)


LOCAL_FIX = ("delete it and rebuild the group (`python -m qscope_utils.mini.build --profile <mini|smoke>` "
             "retrains only the missing layers), or copy an intact file over it")


def load_layer_file(path: str | os.PathLike, k: int, expect: SAEGroup | None = None,
                    device=None, dtype: torch.dtype = torch.float32, fix: str = LOCAL_FIX) -> TopKSAE:
    """Load one ``layer{n}.sae.pt`` (weights_only) and validate shapes against ``expect``.

    A file torch cannot read (truncated download, killed copy, not a torch file) raises
    :class:`CorruptFileError` with ``fix`` (the loader passes the ``hf download --force-download``
    command for hub files)."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:   # noqa: BLE001 - zip/pickle/EOF errors of a damaged file: one clear message
        size = Path(path).stat().st_size if Path(path).exists() else 0
        raise CorruptFileError(path, f"torch.load cannot read it ({size} bytes; {type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'})", fix) from None
    if not isinstance(sd, dict):
        raise TypeError(f"{path} holds a {type(sd).__name__}, expected a dict of tensors")
    _check_keys(sd, where=str(path))
    if expect is not None:
        d_sae, d_model = sd["W_enc"].shape
        if (d_sae, d_model) != (expect.d_sae, expect.d_model):
            raise ValueError(f"{path}: shapes (d_sae={d_sae}, d_model={d_model}) do not match the registry entry "
                             f"{expect.repo_id} (d_sae={expect.d_sae}, d_model={expect.d_model})")
    return TopKSAE.from_state_dict(sd, k=k, dtype=dtype, device=device)


@dataclass
class LoadStats:
    """What :class:`SAELoader` s read while a :func:`track_loads` block (or the process) ran.

    reads: (repo_id, layer) -> number of times the layer FILE was read (cache hits are not reads).
    bytes_read: total size of the files read. seconds: total wall time of the reads.
    peak_alive: the most layers of one loader alive at once (held by its cache or by anyone else),
    counted at each read just after the new layer exists; peak_by_repo: the same per repo_id.
    The memory promise of a run is ``max_reads <= 1 and peak_alive <= cache_size``.
    """

    reads: Counter = field(default_factory=Counter)
    bytes_read: int = 0
    seconds: float = 0.0
    peak_alive: int = 0
    peak_by_repo: dict = field(default_factory=dict)

    @property
    def n_reads(self) -> int:
        return sum(self.reads.values())

    @property
    def max_reads(self) -> int:
        """Most reads of any one layer file (0 when nothing was read)."""
        return max(self.reads.values(), default=0)

    def rereads(self) -> dict:
        """(repo_id, layer) -> reads, for the files read more than once."""
        return {k: v for k, v in self.reads.items() if v > 1}

    def as_dict(self) -> dict:
        """JSON-friendly summary (reads keyed "repo_id:layer")."""
        return {"n_reads": self.n_reads, "max_reads": self.max_reads, "bytes_read": self.bytes_read,
                "seconds": self.seconds, "peak_alive": self.peak_alive, "peak_by_repo": dict(self.peak_by_repo),
                "reads": {f"{r}:{l}": n for (r, l), n in sorted(self.reads.items())}}

    def _record(self, repo_id: str, layer: int, nbytes: int, seconds: float, alive: int) -> None:
        self.reads[(repo_id, layer)] += 1
        self.bytes_read += nbytes
        self.seconds += seconds
        self.peak_alive = max(self.peak_alive, alive)
        self.peak_by_repo[repo_id] = max(self.peak_by_repo.get(repo_id, 0), alive)


_PROCESS_STATS = LoadStats()
STATS_ENV = "QSCOPE_SAE_STATS"   # set to a path: every read rewrites it with load_stats().as_dict() + cache_size
_ACTIVE: list[LoadStats] = []


def load_stats() -> LoadStats:
    """The process-wide :class:`LoadStats` (every read since import). A driver running notebooks in
    other processes sets ``QSCOPE_SAE_STATS=<path>`` and reads that JSON file instead."""
    return _PROCESS_STATS


@contextlib.contextmanager
def track_loads() -> Iterator[LoadStats]:
    """Count SAE layer-file reads and the peak number of layers alive inside the block::

        with track_loads() as st:
            run_notebook_section(...)
        assert st.max_reads <= 1 and st.peak_alive <= scope.saes.cache_size

    Blocks nest; each sees the reads made while it is open."""
    st = LoadStats()
    _ACTIVE.append(st)
    try:
        yield st
    finally:
        _ACTIVE.remove(st)


class SAELoader:
    """Lazy per-layer access to one SAE group, from the hub or a local directory of the same layout.

    ``loader[n]`` returns layer n's :class:`TopKSAE`. At most ``cache_size`` layers are held by the
    loader (the least recently used is dropped BEFORE a new layer is read, so a caller that keeps no
    other reference never has more than ``cache_size`` layers alive). Callers that need several
    layers at once take a :meth:`view` (or :meth:`groups` of ``cache_size`` layers) instead of a
    dict, and put the layer loop outside the data loop so each file is read once.
    ``load_seconds`` records the wall time of each load (download excluded when cached); reads are
    counted in :func:`load_stats` / :func:`track_loads`.

    source: ``"hub"`` (``hf_hub_download``; honours HF_HUB_OFFLINE and the HF cache) or a path.
    """

    def __init__(self, repo_id: str, source: str = "hub", device=None, dtype: torch.dtype = torch.float32,
                 cache_size: int = 2, revision: str | None = None, hidden_size: int | None = None):
        self.group = get_group(repo_id)
        if hidden_size is not None and hidden_size != self.group.d_model:
            raise ValueError(f"{repo_id} has d_model={self.group.d_model} but the model's hidden size is "
                             f"{hidden_size}: pair it with {self.group.backbone}")
        if int(cache_size) < 1:
            raise ValueError(f"cache_size={cache_size}: the loader must hold at least one layer")
        self.source, self.device, self.dtype = source, device, dtype
        self.cache_size, self.revision = int(cache_size), revision
        self._cache: OrderedDict[int, TopKSAE] = OrderedDict()
        self.load_seconds: dict[int, float] = {}
        self.alive = 0            # layers this loader read that still exist (cache or elsewhere)
        if source != "hub" and not Path(source).is_dir():
            raise FileNotFoundError(f"SAE directory {source} does not exist; build it (notebook 00 / "
                                    f"`python -m qscope_utils.mini.build`) or pass source='hub'")
    @property
    def k(self) -> int:
        return self.group.k

    @property
    def n_layers(self) -> int:
        return self.group.n_layers

    def path(self, layer: int) -> Path:
        """Local path of layer n's file (downloads it from the hub when needed)."""
        self.group.check_layer(layer)
        name = layer_filename(layer)
        if self.source != "hub":
            p = Path(self.source) / name
            if not p.is_file():
                raise FileNotFoundError(f"missing layer file {p}: the group directory must hold "
                                        f"layer0.sae.pt … layer{self.n_layers - 1}.sae.pt")
            return p
        return hub_file(self.group.repo_id, name, self.revision)

    def missing(self, layers: list[int] | None = None) -> list[str]:
        """One line per layer file (of ``layers``, default all) that is not available locally, each
        naming its fix (the exact ``hf download`` command for hub groups). No network access."""
        layers = list(range(self.n_layers)) if layers is None else list(layers)
        for n in layers:
            self.group.check_layer(n)
        if self.source == "hub":
            return missing_lines(self.group.repo_id, [layer_filename(n) for n in layers], self.revision)
        return [f"missing layer file {Path(self.source) / layer_filename(n)}: rebuild the group "
                f"(`python -m qscope_utils.mini.build --profile <mini|smoke>`)"
                for n in layers if not (Path(self.source) / layer_filename(n)).is_file()]

    def __getitem__(self, layer: int) -> TopKSAE:
        if layer in self._cache:
            self._cache.move_to_end(layer)
            return self._cache[layer]
        path = self.path(layer)
        while len(self._cache) >= self.cache_size:       # make room first: never cache_size + 1 alive
            self._cache.popitem(last=False)
        if self.alive >= self.cache_size:
            gc.collect()                                 # evicted layers caught in reference cycles
        t0 = time.perf_counter()
        fix = LOCAL_FIX if self.source != "hub" else (
            f"run `{hf_download_command(self.group.repo_id, layer_filename(layer), self.revision)} --force-download`")
        sae = load_layer_file(path, k=self.k, expect=self.group, device=self.device, dtype=self.dtype, fix=fix)
        sae.requires_grad_(False)
        sae.layer = layer
        dt = time.perf_counter() - t0
        self.load_seconds[layer] = dt
        self.alive += 1
        weakref.finalize(sae, SAELoader._dropped, weakref.ref(self))
        for st in (_PROCESS_STATS, *_ACTIVE):
            st._record(self.group.repo_id, int(layer), path.stat().st_size, dt, self.alive)
        if os.environ.get(STATS_ENV):          # e.g. a notebook kernel: the driver reads the file afterwards
            atomic_write_json(os.environ[STATS_ENV], {**_PROCESS_STATS.as_dict(), "cache_size": self.cache_size})
        self._cache[layer] = sae
        return sae

    @staticmethod
    def _dropped(ref) -> None:
        loader = ref()
        if loader is not None:
            loader.alive -= 1

    def view(self, layers: Sequence[int]) -> "LayerView":
        """A ``layer -> TopKSAE`` mapping over ``layers`` that goes through the cache (holds no layer
        itself). ``layers`` must fit in the cache, or each access would re-read a file."""
        return LayerView(self, layers)

    def groups(self, layers: Sequence[int], size: int | None = None) -> Iterator["LayerView"]:
        """Consecutive views of at most ``size`` (default ``cache_size``) layers: the outer loop of a
        pass over all layers that reads each file once (``for saes in loader.groups(ls): <data loop>``)."""
        size = self.cache_size if size is None else int(size)
        layers = list(layers)
        for i in range(0, len(layers), max(1, size)):
            yield self.view(layers[i:i + size])

    def __len__(self) -> int:
        return self.n_layers

    def __iter__(self):
        return (self[n] for n in range(self.n_layers))



class LayerView(Mapping):
    """``layer -> TopKSAE`` over a few layers of a :class:`SAELoader`, read through its cache.

    Use it where code expects a dict of SAEs: a dict would keep its layers alive after the loader
    dropped them; the view keeps only layer numbers."""

    def __init__(self, loader: SAELoader, layers: Sequence[int]):
        layers = list(dict.fromkeys(int(l) for l in layers))
        if len(layers) > loader.cache_size:
            raise ValueError(f"{len(layers)} layers {layers} do not fit in the SAE loader's cache of "
                             f"{loader.cache_size}: open the scope with cache_size>={len(layers)} "
                             f"(open_scope(..., cache_size=...)) or loop over loader.groups(layers)")
        for l in layers:
            loader.group.check_layer(l)
        self.loader, self.layers = loader, layers

    def __getitem__(self, layer: int) -> TopKSAE:
        if int(layer) not in self.layers:
            raise KeyError(layer)
        return self.loader[int(layer)]

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"LayerView({self.loader.group.repo_id}, layers={self.layers})"
