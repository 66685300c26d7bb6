# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt | md5sum | cut -c1-12)
DATA ?= data
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test test-fast serve-search chromium clean-data

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	rm -f $(VENV)/.installed-* && touch $@

# Build the sample index (a generated report PDF) if missing, then start the app on 127.0.0.1:8501.
run: $(STAMP)
	$(PY) -m search_engine sample --data $(DATA)
	$(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port 8501 --server.headless true

# The real-browser test needs Debian's chromium (and CJK fonts, so Chinese pages render in
# screenshots); install them if missing.
chromium:
	@command -v chromium >/dev/null 2>&1 && fc-list :lang=zh | grep -q . || \
		(apt-get update -q && apt-get install -y -q chromium fonts-noto-cjk)

test: $(STAMP) chromium
	$(PY) -m pytest

# The unit tests without the ones marked slow: no OCR, no browser, no model, no server (about a minute).
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit -m "not slow"

# Serve the active sample index over the reference VRAG HTTP API on 127.0.0.1:8002.
serve-search: $(STAMP)
	$(PY) -m search_engine serve --index $(DATA)/indexes/sample --host 127.0.0.1 --port 8002

clean-data:
	rm -rf $(DATA)
