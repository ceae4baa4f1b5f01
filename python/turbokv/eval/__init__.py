"""turbokv's evaluation, demo and benchmarks: quality of cache settings on real models (ΔPPL, KL,
top-1 agreement with intervals), codec distortion against the paper, attention speed tables and
the demo behind ``python -m turbokv``. The library (``import turbokv``) never imports this
package; it needs the ``eval`` extra for progress bars and the ``hf`` extra for the transformers
models (``pip install "turbokv-cache[hf,eval]"``).

Modules: :mod:`.evaluation` (the ``turbokv eval`` entry point), :mod:`.causal` (teacher-forced
causal LMs), :mod:`.encoder` (MiniLM), :mod:`.llama2c`, :mod:`.settings` (the cache settings
compared), :mod:`.quality` (metrics), :mod:`.distortion` (codec vs paper), :mod:`.benchmarks`
(decode attention timing), :mod:`.demo`.
"""
