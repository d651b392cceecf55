"""The FAISS index over extracted clip features: the `egovlp index` job (`cli`: build, `--add`), the
features folder it reads (`features`), the streamed build (`build`) and the folder on disk with the
loaded, searchable index (`store`, which the service loads)."""
