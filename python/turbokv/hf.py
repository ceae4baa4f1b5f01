"""Hugging Face transformers integration: a drop-in compressed cache and the "turbokv" attention.

    import turbokv.hf  # registers attn_implementation="turbokv"
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="turbokv")
    cache = turbokv.hf.TurboQuantCache(config=model.config, key_bits=4, value_bits=4)
    out = model.generate(ids, past_key_values=cache)  # transformers >= 5.24: cache=cache

With ``attn_implementation="turbokv"`` attention runs on the compressed codes and no decoded K/V
is ever built. With any other attention implementation the cache returns decoded float K/V
tensors every step: it still stores only the codes, but each step briefly allocates a decoded copy
of the whole layer, as transformers' own QuantizedCache does. Pass ``config=model.config`` so the
cache knows which from the first step (without it, the first layer's first step decodes, to be
safe).

Importing this module also moves turbokv's parallel work onto torch's OpenMP threads
(:func:`turbokv.share_openmp_threads`; :data:`OPENMP_LIBRARY` names the runtime, None where it
could not): on a pool of its own it shared the cores with torch's spinning threads between two of
torch's ops (TTFT 1.4-1.6x DynamicCache's on 16 cores; 1.01-1.05x on torch's threads).
``TURBOKV_OPENMP=0`` keeps turbokv's pool.

transformers 5.24 renamed the cache argument of ``forward`` and ``generate`` from
``past_key_values`` to ``cache`` (the old name warns there and leaves ``forward`` in 5.40);
:data:`CACHE_KEYWORD` is the name the installed version takes.

Hybrid models (linear-attention or state-space layers among attention layers: Qwen3.5,
Qwen3-Next, Nemotron-H, ...) need ``config=model.config`` and transformers 5: the cache compresses
the attention layers and keeps the others as transformers does (:mod:`turbokv.hf_layers`).

Tested with transformers 5.25, 5.18 and 4.57. CPU tensors only (turbokv is a CPU library).
"""

from __future__ import annotations

import copy
import inspect
import os
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import transformers
from packaging.version import Version
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ._validation import as_float_array
from . import presets
from .cache import KVCache
from .hf_layers import state_layer_plan
from .layers import check_setting_names, settings_for_layer, summarize, summary_text
from .threads import share_openmp_threads, thread_backend

__all__ = ["CACHE_KEYWORD", "OpenMPSpinWarning", "TurboQuantCache", "TurboQuantLayer", "openmp_spin_advice",
           "turbokv_attention"]

#: The keyword argument by which the installed transformers' ``forward`` and ``generate`` take a
#: cache: ``"cache"`` from 5.24 on, ``"past_key_values"`` before. Version-neutral calls:
#: ``model(ids, **{turbokv.hf.CACHE_KEYWORD: cache})``.
CACHE_KEYWORD: str = ("cache" if Version(transformers.__version__) >= Version("5.24.0.dev0")
                      else "past_key_values")

#: Whether the installed transformers' ``crop(n)`` takes a count of newest tokens to remove (5.x:
#: ``crop(tokens_to_remove)``, 0 removes nothing; assisted generation calls ``crop(0)`` after every
#: fully accepted draft) rather than a length to keep (4.x: ``crop(max_length)``, 0 empties the
#: cache). Read from its own ``DynamicLayer.crop``, whose convention generate() follows.
CROP_TAKES_A_COUNT: bool = "tokens_to_remove" in inspect.signature(DynamicLayer.crop).parameters

#: torch thread counts from which turbokv attention warns (once per process) about OpenMP's spin.
SPIN_WARNING_THREADS = 4
#: Environment variables that settle how torch's OpenMP threads wait (read when torch loads).
SPIN_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


class OpenMPSpinWarning(RuntimeWarning):
    """torch's OpenMP threads spin after each op and slow turbokv's thread pool (see
    :func:`openmp_spin_advice`)."""


def openmp_spin_advice() -> Optional[str]:
    """What to set before starting Python so that torch's OpenMP threads stop taking turbokv's
    cores, or None where nothing needs setting: turbokv runs on torch's OpenMP threads
    (:func:`turbokv.share_openmp_threads`, which ``import turbokv.hf`` calls; Linux), fewer than
    ``SPIN_WARNING_THREADS`` torch threads, or one of ``SPIN_SETTINGS`` in the environment.

    After each parallel op torch's OpenMP threads keep spinning before they sleep (GNU OpenMP,
    torch's on Linux: 300,000 ``pause`` instructions, milliseconds where one takes ~140 cycles, as
    on Intel cores since Skylake; LLVM's, on macOS: 200 ms), while
    turbokv's encode, probe and attention run on turbokv's own pool between two of torch's ops:
    both sets of threads then share the cores. Measured with SmolLM2-135M's shape, a 2K-token
    prompt (``bench/prefill.py --random-weights``, session 48), on turbokv's own pool: on 16
    Emerald Rapids cores TTFT 1.42-1.65x DynamicCache + SDPA's, 1.07-1.09x with
    ``GOMP_SPINCOUNT=1000``, 1.07-1.08x with ``OMP_WAIT_POLICY=PASSIVE`` (batch 1); on 2 cores
    1.08-1.10x and 1.02-1.06x. On torch's OpenMP threads: 1.01-1.05x and 1.05-1.06x."""
    threads = torch.get_num_threads()
    if (thread_backend() == "openmp" or threads < SPIN_WARNING_THREADS
            or any(name in os.environ for name in SPIN_SETTINGS)):
        return None
    return (f"torch's {threads} OpenMP threads keep spinning for milliseconds after each op and take "
            "the cores turbokv's own thread pool needs between them (torch's OpenMP runtime could "
            "not be shared here, or TURBOKV_OPENMP=0; a 2K-token prompt's first token: 1.4-1.6x the "
            "dense time on 16 cores, 1.07-1.09x with GOMP_SPINCOUNT=1000). Start Python with "
            "GOMP_SPINCOUNT=1000 (GNU OpenMP: torch on Linux) or OMP_WAIT_POLICY=PASSIVE (any "
            "OpenMP) in the environment; setting either silences this warning "
            "(turbokv.hf.openmp_spin_advice).")


_spin_checked = False


def _warn_about_openmp_spin() -> None:
    global _spin_checked
    if _spin_checked:
        return
    _spin_checked = True
    advice = openmp_spin_advice()
    if advice:
        warnings.warn(advice, OpenMPSpinWarning, stacklevel=3)


class _KVPlaceholder(torch.Tensor):
    """Shape-only K/V on the meta device, standing for a TurboQuantLayer's compressed store.

    Moving it to the CPU returns it unchanged, with the store attached: Gemma 3n and Gemma 4's
    KV-sharing layers call ``.to(query.device)`` on the K/V of the layer they share before
    attending (transformers 5.18), which a plain meta tensor refuses. Other ops on it give
    placeholders without the store (shapes only); one that combines it with real tensors (a model
    computing with its cached K/V outside attention, as Doge's dynamic mask does) raises
    NotImplementedError saying so, and reading values fails as on any meta tensor.
    """

    @classmethod
    def of(cls, shape: Tuple[int, ...], dtype: torch.dtype) -> "_KVPlaceholder":
        return torch.Tensor._make_subclass(cls, torch.empty(shape, dtype=dtype, device="meta"))

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            targets = list(args[1:]) + list(kwargs.values())
            if len(targets) == 1 and isinstance(targets[0], (torch.device, str)) and \
                    torch.device(targets[0]).type == "cpu":
                return args[0]
        with torch._C.DisableTorchFunctionSubclass():  # reading .device here must not recurse
            mixed = any(t.device.type != "meta" for t in _tensor_leaves((args, kwargs)))
        if mixed:
            raise NotImplementedError(
                "this model computes with the cached keys/values outside the attention call (e.g. "
                "Doge's dynamic mask); under attn_implementation=\"turbokv\" the cache holds them "
                "only as codes: use attn_implementation=\"sdpa\" with the TurboQuantCache, which "
                "then returns decoded K/V")
        return super().__torch_function__(func, types, args, kwargs)


def _tensor_leaves(tree: Any) -> list:
    """The tensors in nested tuples, lists and dicts of arguments."""
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _tensor_leaves(item)]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in _tensor_leaves(item)]
    return [tree] if isinstance(tree, torch.Tensor) else []


class TurboQuantLayer(CacheLayerMixin):
    """One layer of :class:`TurboQuantCache`: a :class:`turbokv.KVCache` behind transformers' layer API."""

    is_compileable = False
    is_croppable = True
    is_sliding = False

    def __init__(self, layer_index: int = 0, fused: Optional[bool] = None,
                 mask_check: Optional["_MaskCheck"] = None,
                 on_fused: Optional[Callable[[], None]] = None, **settings: Any) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.settings = settings
        self.cache: Optional[KVCache] = None
        # True: turbokv attention reads the codes and update returns shape-only placeholders;
        # False: another attention, update returns decoded K/V; None: not known yet (decode, and
        # learn it from the first turbokv attention call).
        self.fused = fused
        self.decoded_steps = 0  # updates that built a decoded copy of the layer
        self.fused_calls = 0    # turbokv attention calls served from the codes
        self.sliding_window: Optional[int] = None  # the window the last turbokv attention applied
        self._mask_check = mask_check if mask_check is not None else _MaskCheck()
        self._on_fused = on_fused  # tells the owning cache that turbokv attention read this layer

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.cache = KVCache(head_dim=key_states.shape[-1], num_kv_heads=key_states.shape[1],
                             layer_index=self.layer_index, **self.settings)
        self.keys = torch.empty(0, dtype=self.dtype)
        self.values = torch.empty(0, dtype=self.dtype)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        # Prefill protection needs turbokv attention's queries: skip it under another attention.
        self.cache._update(key_states, value_states, probe=self.fused is not False)
        if self.fused:
            # Shape-only placeholders on the meta device: any attention other than turbokv's that
            # tried to read them would fail loudly instead of computing with garbage.
            shape = (self.cache.batch, self.cache.num_kv_heads, self.cache.offset, self.cache.head_dim)
            keys = _KVPlaceholder.of(shape, self.dtype)
            values = _KVPlaceholder.of(shape, self.dtype)
        else:
            k, v = self.cache.fetch()
            keys, values = torch.from_numpy(k).to(self.dtype), torch.from_numpy(v).to(self.dtype)
            self.decoded_steps += 1
        keys._turbokv_layer = self  # lets turbokv_attention find the compressed store
        return keys, values

    def get_mask_sizes(self, query_length: Any) -> Tuple[int, int]:
        # transformers 5 passes the query length, 4.57 the cache_position tensor.
        if isinstance(query_length, torch.Tensor):
            query_length = query_length.shape[0]
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return 0 if self.cache is None else self.cache.offset

    def get_max_length(self) -> int:
        return -1

    def get_max_cache_shape(self) -> int:  # the name transformers 4.57 uses
        return -1

    def reset(self) -> None:
        if self.cache is not None:
            self.cache.clear()

    def crop(self, tokens_to_remove: int) -> None:
        """Negative: remove that many newest tokens; positive (the legacy convention): keep that
        many; 0 as the installed transformers reads it (:data:`CROP_TAKES_A_COUNT`: remove none,
        or on 4.x keep none)."""
        length = self.get_seq_length()
        if tokens_to_remove == 0 and CROP_TAKES_A_COUNT:
            return
        remove = -tokens_to_remove if tokens_to_remove < 0 else max(0, length - tokens_to_remove)
        if remove and self.cache is not None:
            self.cache.trim(min(remove, length))

    # Batch reshaping for beam search, contrastive search and num_return_sequences: the codes of
    # the chosen rows are copied in C++ (never decoded and re-encoded).
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.cache is not None and self.cache.batch:
            self.cache.select_batch(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.cache is not None and self.cache.batch:
            self.cache.select_batch(np.repeat(np.arange(self.cache.batch), int(repeats)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.cache is not None and self.cache.batch:
            self.cache.select_batch(indices)


_STATE_METHODS = tuple(name for name in ("update_conv_state", "update_recurrent_state", "get_conv_state",
                                         "get_recurrent_state") if hasattr(Cache, name))


def _checked_state_method(name: str) -> Callable[..., Any]:
    """Cache's state method ``name``, after TurboQuantCache._check_state_layer of its layer_idx."""
    base = getattr(Cache, name)
    signature = inspect.signature(base)

    def method(self: "TurboQuantCache", *args: Any, **kwargs: Any) -> Any:
        self._check_state_layer(signature.bind(self, *args, **kwargs).arguments["layer_idx"])
        return base(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = base.__doc__
    return method


class TurboQuantCache(Cache):
    """A transformers ``Cache`` that stores every layer's keys and values TurboQuant-compressed.

    Takes the :class:`turbokv.KVCache` settings (``key_bits``, ``value_bits``, ``key_mode``,
    ``value_mode``, ``residual_window``, ``seed``, ``norm_dtype``, ``key_norm_correction``,
    ``value_norm_correction``) for every layer; layers are created as the model reaches them, each
    with its own rotation seeds. ``layer_settings`` (one dict or None per layer) overrides them
    layer by layer, e.g. ``turbokv.boundary_layer_settings(num_layers, 2)`` keeps the first and
    last two layers at 8 bits.

    ``preset``: ``"k8v4"`` (the default when no bits are given), ``"4bit"``, ``"k4v3"``,
    ``"3bit"`` or ``"float16"`` (:mod:`turbokv.presets`); explicit settings override it. Key
    centring and prefill key protection are on by default (``center_keys``, ``protect_keys``);
    :meth:`summary` says what each layer chose.

    ``config``: the model's config (required for hybrid models, whose linear-attention and
    state-space layers the cache then keeps in transformers' own layer classes, uncompressed: a
    few fixed-size states per sequence). With it the cache knows from the first step whether the model
    runs ``attn_implementation="turbokv"`` (read as each layer is created, so a
    ``set_attn_implementation`` before the first step counts) and never decodes under fused
    attention. Without it the first layer's first update returns decoded K/V (a transient float32
    copy of its prompt K/V), since another attention implementation would need them; once
    turbokv attention has read one layer, the layers created after it are taken as fused too
    (one model, one attention implementation).

    Example:
        >>> cache = TurboQuantCache(config=model.config, preset="4bit")
        >>> out = model.generate(input_ids, **{CACHE_KEYWORD: cache}, max_new_tokens=20)
        >>> print(cache.summary_text())  # key bits per layer, stored bits per coordinate
    """

    def __init__(self, layer_settings: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
                 config: Any = None, *, preset: Optional[str] = None, **settings: Any) -> None:
        settings = presets.resolve(preset, settings)
        # Validate every layer's settings now, not at first use.
        check_setting_names("TurboQuantCache", settings)
        for i, entry in enumerate(layer_settings or ()):
            check_setting_names(f"TurboQuantCache's layer_settings[{i}]", entry)
        for i in range(len(layer_settings) if layer_settings else 1):
            KVCache(head_dim=8, num_kv_heads=1, **settings_for_layer(i, settings, layer_settings))
        if config is not None and not hasattr(config, "_attn_implementation"):
            raise TypeError(f"config must be a transformers model config, got {type(config).__name__}")
        self.settings = settings
        self.layer_settings = None if layer_settings is None else list(layer_settings)
        self.config = config
        self._mask_check = _MaskCheck()  # one mask check per forward, shared by the layers
        self._fused_seen = False  # turbokv attention has read a layer (learned without config)
        plan = None if config is None else state_layer_plan(config)
        if plan is None:
            super().__init__(layer_class_to_replicate=self._new_layer)
        else:  # a hybrid model: every layer laid out now, state layers as transformers keeps them
            super().__init__(layers=[self._new_layer(i) if make is None else make() for i, make in enumerate(plan)])

    def _new_layer(self, index: Optional[int] = None) -> TurboQuantLayer:
        index = len(self.layers) if index is None else index
        fused = None if self.config is None else self.config._attn_implementation == "turbokv"
        if fused is None and self._fused_seen:
            fused = True
        return TurboQuantLayer(layer_index=index, fused=fused, mask_check=self._mask_check,
                               on_fused=self._saw_fused,
                               **settings_for_layer(index, self.settings, self.layer_settings))

    def _saw_fused(self) -> None:
        self._fused_seen = True

    # A hybrid model's linear-attention and state-space layers (transformers 5.x) -------------

    def _check_state_layer(self, layer_idx: int) -> None:
        if layer_idx >= len(self.layers) or isinstance(self.layers[layer_idx], TurboQuantLayer):
            raise ValueError(
                f"layer {layer_idx} of this model keeps a linear-attention or state-space state (a "
                "hybrid model such as Qwen3.5 or Qwen3-Next): create the cache with "
                "TurboQuantCache(config=model.config, ...) so that it lays those layers out")

    def summary(self) -> Dict[str, Any]:
        """Per-layer choices and totals: see :func:`turbokv.layers.summarize`."""
        return summarize([layer.cache for layer in self._kv_layers() if layer.cache is not None])

    def summary_text(self) -> str:
        """:meth:`summary` as a short table."""
        return summary_text(self.summary())

    # Prompt caching ---------------------------------------------------------------------------

    def save(self, path: "os.PathLike[str] | str") -> None:
        """Writes every layer (codes, settings, per-layer choices) to ``path``: turbokv's
        versioned, checksummed file (:func:`turbokv.save_cache`), written atomically. Prefill a
        long prompt once, save it, and :meth:`load` it for every request that starts with it."""
        from .persist import save_cache

        if len(self._kv_layers()) != len(self.layers):
            raise NotImplementedError("saving the cache of a hybrid model (its linear-attention or "
                                      "state-space layers' states) is not implemented; copy() is")
        if not self.layers or any(layer.cache is None for layer in self.layers):
            raise ValueError("nothing to save: run the model on a prompt with this cache first")
        dtype = str(self.layers[0].dtype).replace("torch.", "")
        save_cache(path, [layer.cache for layer in self.layers],
                   extra={"kind": "TurboQuantCache", "settings": self.settings,
                          "layer_settings": self.layer_settings, "dtype": dtype})

    @classmethod
    def load(cls, path: "os.PathLike[str] | str", config: Any = None) -> "TurboQuantCache":
        """A cache read from a :meth:`save` file; it continues exactly as the saved one would.
        ``config``: the model's config, as for the constructor. ValueError for a file that is
        not a saved TurboQuantCache or is corrupted."""
        from .persist import load_cache_and_extra

        caches, extra = load_cache_and_extra(path)
        if extra.get("kind") != "TurboQuantCache":
            raise ValueError(f"{path} holds layer caches, not a TurboQuantCache: use turbokv.load_cache")
        cache = cls(layer_settings=extra.get("layer_settings"), config=config, **extra["settings"])
        if cache.layer_class_to_replicate is None:  # laid out for a hybrid model, which save refuses
            raise ValueError(f"{path} was saved from a model of attention layers only; config is a "
                             "hybrid model's (linear-attention or state-space layers)")
        dtype = getattr(torch, extra.get("dtype", "float32"))
        for store in caches:
            cache._adopt(store, dtype)
        return cache

    def copy(self) -> "TurboQuantCache":
        """An independent copy (prefix sharing: prefill a prompt once, copy it per request). The
        codes are copied, never decoded; both continue exactly as the original would."""
        from .persist import copy_cache

        cache = TurboQuantCache(layer_settings=self.layer_settings, config=self.config, **self.settings)
        cache._fused_seen = self._fused_seen
        if cache.layer_class_to_replicate is None:  # a hybrid model's layers, laid out up front
            for index, layer in enumerate(self.layers):
                if not isinstance(layer, TurboQuantLayer):
                    cache.layers[index] = copy.deepcopy(layer)  # a few state tensors
                elif layer.cache is not None:
                    cache._hold(cache.layers[index], copy_cache(layer.cache), layer.dtype)
            return cache
        for layer in self.layers:
            if layer.cache is None:
                break
            cache._adopt(copy_cache(layer.cache), layer.dtype)
        return cache

    def __deepcopy__(self, memo: Dict[int, Any]) -> "TurboQuantCache":
        """``copy.deepcopy(cache)``, transformers' documented way to reuse a prefilled prompt
        cache: :meth:`copy` (the C++ stores cannot be pickled)."""
        return self.copy()

    def _adopt(self, store: KVCache, dtype: torch.dtype) -> None:
        """Appends a layer holding ``store`` (for load and copy)."""
        self.layers.append(self._hold(self._new_layer(), store, dtype))

    @staticmethod
    def _hold(layer: "TurboQuantLayer", store: KVCache, dtype: torch.dtype) -> "TurboQuantLayer":
        """``layer``, made to hold ``store`` as if its updates had filled it."""
        layer.cache, layer.dtype, layer.device = store, dtype, torch.device("cpu")
        layer.keys = torch.empty(0, dtype=dtype)
        layer.values = torch.empty(0, dtype=dtype)
        layer.is_initialized = True
        return layer

    def _kv_layers(self) -> "list[TurboQuantLayer]":
        """The layers holding compressed K/V (all of them but a hybrid model's state layers)."""
        return [layer for layer in self.layers if isinstance(layer, TurboQuantLayer)]

    @property
    def nbytes(self) -> int:
        """Bytes held by all layers' compressed stores (a hybrid model's state layers not counted)."""
        return sum(layer.cache.nbytes for layer in self._kv_layers() if layer.cache is not None)


# The state methods this transformers has (5.18: update_*; 5.25 adds get_*), each checking its
# layer first: without config the layers they index do not exist.
for _name in _STATE_METHODS:
    setattr(TurboQuantCache, _name, _checked_state_method(_name))


class _MaskCheck:
    """Turns transformers' 4-D attention mask into per-(batch, key) validity, checking that it is
    causal (or sliding-window causal) plus padding. Every layer of a forward gets the same mask
    tensor, so the result is kept for that tensor (by identity) and the check runs once per
    forward and kind of layer, not once per layer."""

    ROWS = 256  # mask rows compared at a time: bounded scratch memory for long prefills

    def __init__(self) -> None:
        self._mask: Optional[torch.Tensor] = None
        self._key: Tuple[int, int, int, int] = (0, 0, 0, 0)
        self._valid: Optional[np.ndarray] = None
        self.checks = 0  # masks actually examined (for tests)

    def __call__(self, attention_mask: Optional[torch.Tensor], batch: int, q_len: int,
                 length: int, window: int = 0) -> Optional[np.ndarray]:
        if attention_mask is None:
            return None
        key = (batch, q_len, length, window)
        if attention_mask is self._mask and self._key == key:
            return self._valid
        valid = self._check(attention_mask, batch, q_len, length, window)
        self._mask, self._key, self._valid = attention_mask, key, valid
        self.checks += 1
        return valid

    def _check(self, attention_mask: torch.Tensor, batch: int, q_len: int, length: int,
               window: int) -> Optional[np.ndarray]:
        if attention_mask.dim() != 4 or attention_mask.shape[1] != 1:
            raise NotImplementedError("turbokv attention takes (batch, 1, q_len, kv_len) masks, got "
                                      f"shape {tuple(attention_mask.shape)}")

        def allowed(m: torch.Tensor) -> torch.Tensor:
            return m if m.dtype == torch.bool else m == 0

        # Each key's validity is read in the last query row that can see it: the newest row
        # without a window, else the row whose window it leaves next. Keys no row sees are moot.
        base = length - q_len  # query row i sits at position base + i
        keys = torch.arange(length)
        if window:
            rows = (keys + window - 1 - base).clamp(max=q_len - 1)
        else:
            rows = torch.full((length,), q_len - 1)
        valid = allowed(attention_mask[:, 0, rows.clamp(min=0), keys]) | (rows < 0)
        valid = valid.expand(batch, length)
        for start in range(0, q_len, self.ROWS):
            stop = min(start + self.ROWS, q_len)
            last = base + torch.arange(start, stop)
            seen = keys[None, :] <= last[:, None]
            if window:
                seen &= keys[None, :] > last[:, None] - window
            mask = allowed(attention_mask[:, 0, start:stop, :length]).expand(batch, stop - start, length)
            if not torch.equal(mask, seen[None] & valid[:, None, :]):
                raise NotImplementedError(
                    "turbokv attention supports causal masks with padding only, and sliding-window "
                    f"ones when the layer passes its window (window={window or None}); not packed "
                    "sequences or other patterns")
        return None if bool(valid.all()) else valid.numpy().copy()


# Keyword arguments transformers' attention modules pass that do not change what attention
# computes (bookkeeping for other implementations); any other one is honoured or refused.
_NO_EFFECT = frozenset({"position_ids", "use_cache", "cache_position", "cache", "past_key_values",
                        "past_key_value", "position_embeddings", "output_hidden_states",
                        "return_dict", "layer_idx", "token_type_ids"})


def _refuse_unimplemented(dropout: float, kwargs: Dict[str, Any]) -> None:
    """NotImplementedError naming the first argument turbokv attention would otherwise ignore."""
    if dropout:
        raise NotImplementedError(f"turbokv attention does not implement dropout={dropout} "
                                  "(training); call model.eval() for inference")
    for name, value in kwargs.items():
        if name in _NO_EFFECT or value is None:
            continue
        if name.startswith("output_") and name != "output_attentions":  # e.g. output_router_logits
            continue
        if (name == "is_causal" and value) or (name == "output_attentions" and not value):
            continue
        raise NotImplementedError(f"turbokv attention does not implement the argument {name}="
                                  f"{value!r:.60}; use another attn_implementation")


def turbokv_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: Optional[torch.Tensor],
                      scaling: Optional[float] = None, dropout: float = 0.0,
                      softcap: Optional[float] = None, s_aux: Optional[torch.Tensor] = None,
                      sliding_window: Optional[int] = None, **kwargs: Any
                      ) -> Tuple[torch.Tensor, None]:
    """Attention over a TurboQuantCache's codes, for ``attn_implementation="turbokv"``.

    query (batch, q_heads, q_len, head_dim); returns (batch, q_len, q_heads, head_dim) in the
    query's dtype. Honours ``scaling``, ``softcap`` (Gemma 2 logit softcapping), ``s_aux``
    (gpt-oss attention sinks, one logit per query head) and ``sliding_window`` (a layer's query
    at position p sees tokens p - sliding_window < t <= p, as transformers' masks: Mistral,
    Gemma 2/3 local layers, Qwen2 with sliding windows; the cache keeps every token); raises
    NotImplementedError naming any other argument that would change the result (dropout > 0,
    packed sequences, ...). Without a TurboQuantCache (``use_cache=False``) it falls back to SDPA.
    """
    _refuse_unimplemented(dropout, kwargs)
    window = 0 if sliding_window is None else int(sliding_window)
    if sliding_window is not None and (window <= 0 or window != sliding_window):
        raise ValueError(f"sliding_window must be a positive int or None, got {sliding_window!r}")
    layer = getattr(key, "_turbokv_layer", None)
    if layer is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        if key.device.type == "meta":  # a TurboQuantLayer's placeholder, changed on its way here
            raise NotImplementedError(
                "this model changes the cached keys/values between the cache and the attention "
                "call (JetMoE repeats them per expert), so turbokv attention cannot find the "
                "compressed store; use attn_implementation=\"sdpa\" with the TurboQuantCache, "
                "which then returns decoded K/V")
        if s_aux is not None or softcap is not None:
            raise NotImplementedError("turbokv attention without a TurboQuantCache falls back to "
                                      "SDPA, which has no softcap or attention sinks: pass a "
                                      "TurboQuantCache (use_cache=True)")
        # transformers' masks already carry the sliding window for SDPA.
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    if not layer.fused and layer._on_fused is not None:
        layer._on_fused()
    _warn_about_openmp_spin()
    layer.fused = True
    layer.fused_calls += 1
    layer.sliding_window = window or None
    cache = layer.cache
    batch, _, q_len, _ = query.shape
    mask = layer._mask_check(attention_mask, batch, q_len, cache.offset, window)
    sinks = None if s_aux is None else as_float_array(s_aux, "s_aux").reshape(-1)
    # The model's transposed query view is read in place and the output comes back as
    # (batch, q_len, q_heads, head_dim), what the output projection reads: no transposing copies.
    out = cache.attention(query, scale=scaling, key_mask=mask, softcap=softcap or None, sinks=sinks,
                          window=window or None, positions_first=True)
    return torch.from_numpy(out).to(query.dtype), None


AttentionInterface.register("turbokv", turbokv_attention)
#: The OpenMP runtime whose threads run turbokv's parallel work (torch's), or None: turbokv's pool.
OPENMP_LIBRARY: Optional[str] = share_openmp_threads("torch")
AttentionMaskInterface.register("turbokv", sdpa_mask)
