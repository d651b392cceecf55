"""serve: the `egovlp serve` HTTP service and the `egovlp index` job that builds what it searches.

Layout:

- `serve/api/`: the HTTP surface - the /v1 routes and the operational routes, pydantic schemas, the
  one error table and envelope, request hardening (API key, body limit, media types, paths), and
  the checks that turn request inputs (texts, videos) into what a batch takes;
- `serve/decode/`: the bounded pool of video decode worker processes (`pool`) and what runs inside
  each worker (`child`, kept light: the forkserver preloads it);
- `serve/index/`: the offline FAISS index job - reading a features folder (`features`), the
  streamed build (`build`), the folder on disk and the loaded index (`store`), and the
  `egovlp index` command (`cli`). It lives here, not in a top-level folder, because the design's
  layout card fixes the top-level folders and gives the FAISS index build / load to `serve/`;
- top level: the dynamic batcher, the model backend, the app's typed state, the service limits
  (`settings`), the metrics, the app factory (`app`) and the `egovlp serve` command (`cli`, which
  imports the app factory, never the reverse).

The user-side client is `egovlp.client` (a library piece that imports nothing from here); the load
tester is `benchmarks/loadtest.py`.
"""
