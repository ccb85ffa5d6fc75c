#!/usr/bin/env python3
"""Cross-reference checks of deploy/ that schema validators and linters do not make.

    crossref.py dockerfile ROOT FILE...   COPY sources exist and survive .dockerignore; ENTRYPOINT is installed
    crossref.py compose FILE               volumes, configs, services, bind mounts and build files resolve
    crossref.py k8s FILE...                selectors, named ports, config/secret refs, mounts, quantities, hardening
    crossref.py envfile UNIT ENVFILE       KEY=value syntax; every ${VAR} of the unit's Exec lines is defined
    crossref.py metrics SRC_DIR FILE...    every hearth_* metric named in dashboards/rules is exported by the code
    crossref.py promql OUT FILE...         writes the Grafana dashboards' queries as a rules file for promtool
    crossref.py grafana DASHBOARD PROV...  provisioning files are apiVersion 1; the dashboard's data sources are provisioned
    crossref.py readme README ROOT FILE... every listed file is named in README.md, every relative link exists

Prints nothing and exits 0 when all is well; otherwise one line per problem on stderr and exit 1.
"""

import fnmatch
import json
import os
import re
import sys

import yaml

problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


# ---------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(path):
    """(line number, INSTRUCTION, rest) with continuation lines joined and comments dropped."""
    out, buf, start = [], "", 0
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue
            if not buf:
                start = n
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            parts = buf.strip().split(None, 1)
            out.append((start, parts[0].upper(), parts[1] if len(parts) > 1 else ""))
            buf = ""
    return out


def dockerignore_patterns(root):
    p = os.path.join(root, ".dockerignore")
    if not os.path.exists(p):
        return []
    pats = []
    with open(p, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                pats.append(line.rstrip("/"))
    return pats


def ignored(rel, patterns):
    """True when .dockerignore excludes rel (no '!' exceptions are used here)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        if pat.startswith("!"):
            problem(".dockerignore", f"exception pattern {pat} is not understood by this check")
            continue
        for pre in prefixes:
            if fnmatch.fnmatchcase(pre, pat):
                return True
            if pat.startswith("**/") and fnmatch.fnmatchcase(pre.split("/")[-1], pat[3:]):
                return True
    return False


def check_dockerfile(root, path):
    patterns = dockerignore_patterns(root)
    instrs = dockerfile_instructions(path)
    declared_args = set()
    seen_from = False
    stage_copies = []
    entrypoint = None
    for n, ins, rest in instrs:
        where = f"{path}:{n}"
        if ins == "ARG" and not seen_from:
            declared_args.add(rest.split("=", 1)[0].strip())
        elif ins == "FROM":
            seen_from = True
            stage_copies = []
            for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", rest):
                if var not in declared_args:
                    problem(where, f"FROM uses ${var}, which no ARG before the first FROM declares")
        elif ins in ("COPY", "ADD"):
            words = rest.split()
            flags = [w for w in words if w.startswith("--")]
            args = [w for w in words if not w.startswith("--")]
            if len(args) < 2:
                problem(where, f"{ins} needs a source and a destination")
                continue
            stage_copies.append(args[-1])
            if any(f.startswith("--from=") for f in flags):
                continue
            for src in args[:-1]:
                rel = os.path.normpath(src).lstrip("/")
                if rel == ".":
                    continue
                if not os.path.exists(os.path.join(root, rel)):
                    problem(where, f"{ins} source {src} does not exist in the build context {root}")
                elif ignored(rel, patterns):
                    problem(where, f"{ins} source {src} is excluded by .dockerignore")
        elif ins == "ENTRYPOINT":
            try:
                entrypoint = json.loads(rest)
            except json.JSONDecodeError:
                problem(where, "ENTRYPOINT is not in JSON (exec) form")
    if not seen_from:
        problem(path, "no FROM")
    if entrypoint:
        exe = entrypoint[0]
        if exe not in stage_copies and not any(exe.startswith(d.rstrip("/") + "/") for d in stage_copies):
            problem(path, f"ENTRYPOINT {exe} is not installed by a COPY of the final stage")


# ---------------------------------------------------------------- compose


def check_compose(path):
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    services = doc.get("services") or {}
    volumes = set((doc.get("volumes") or {}).keys())
    configs = set((doc.get("configs") or {}).keys())
    used_volumes, used_configs = set(), set()
    for name, svc in services.items():
        where = f"{path}: service {name}"
        build = svc.get("build")
        if isinstance(build, dict):
            ctx = os.path.normpath(os.path.join(base, build.get("context", ".")))
            if not os.path.isdir(ctx):
                problem(where, f"build context {build.get('context')} is not a directory")
            df = os.path.join(ctx, build.get("dockerfile", "Dockerfile"))
            if not os.path.isfile(df):
                problem(where, f"dockerfile {build.get('dockerfile')} not found in the build context")
        if "image" not in svc and "build" not in svc:
            problem(where, "has neither image nor build")
        for v in svc.get("volumes") or []:
            src = v.get("source") if isinstance(v, dict) else v.split(":", 1)[0]
            if src.startswith((".", "/", "~")):
                if not os.path.exists(os.path.normpath(os.path.join(base, src))):
                    problem(where, f"bind mount source {src} does not exist")
            else:
                used_volumes.add(src)
                if src not in volumes:
                    problem(where, f"named volume {src} is not declared under volumes:")
        for c in svc.get("configs") or []:
            src = c.get("source") if isinstance(c, dict) else c
            used_configs.add(src)
            if src not in configs:
                problem(where, f"config {src} is not declared under configs:")
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                problem(where, f"depends_on names unknown service {dep}")
    for v in sorted(volumes - used_volumes):
        problem(path, f"volume {v} is declared but no service mounts it")
    for c in sorted(configs - used_configs):
        problem(path, f"config {c} is declared but no service uses it")
    for name, cfg in (doc.get("configs") or {}).items():
        if "content" in cfg and str(cfg.get("content", "")).lstrip().startswith("apiVersion"):
            try:
                yaml.safe_load(cfg["content"])
            except yaml.YAMLError as e:
                problem(f"{path}: config {name}", f"content is not valid YAML: {e}")


# ---------------------------------------------------------------- Kubernetes

QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
NAMESPACED = {"ConfigMap", "Secret", "Service", "StatefulSet", "Deployment", "PersistentVolumeClaim"}


def check_quantities(where, res):
    for section in ("requests", "limits"):
        for key, val in ((res or {}).get(section) or {}).items():
            if not QUANTITY.match(str(val)):
                problem(where, f"resources.{section}.{key} = {val!r} is not a Kubernetes quantity")


def check_k8s(files):
    docs = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for d in yaml.safe_load_all(f):
                if d:
                    docs.append((path, d))
    by_kind = {}
    for path, d in docs:
        by_kind.setdefault(d.get("kind"), {})[d["metadata"]["name"]] = (path, d)
    namespaces = set(by_kind.get("Namespace", {}).keys())
    workloads = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
    for path, d in docs:
        kind, name = d.get("kind"), d["metadata"]["name"]
        where = f"{path}: {kind}/{name}"
        if kind in NAMESPACED and d["metadata"].get("namespace") not in namespaces:
            problem(where, f"namespace {d['metadata'].get('namespace')} is not defined by these manifests")
    for name, (path, d) in workloads.items():
        where = f"{path}: {d['kind']}/{name}"
        spec = d["spec"]
        tmpl = spec["template"]
        labels = tmpl["metadata"].get("labels") or {}
        for k, v in (spec["selector"].get("matchLabels") or {}).items():
            if labels.get(k) != v:
                problem(where, f"selector {k}={v} does not match the pod template's labels")
        pod = tmpl["spec"]
        psc = pod.get("securityContext") or {}
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problem(where, "pod securityContext.seccompProfile.type is not RuntimeDefault")
        vols = {v["name"] for v in pod.get("volumes") or []}
        vols |= {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
        for c in pod["containers"]:
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext") or {}
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                problem(cw, "runAsNonRoot is not set")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(cw, "allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problem(cw, "readOnlyRootFilesystem is not true")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problem(cw, "capabilities.drop does not contain ALL")
            res = c.get("resources") or {}
            check_quantities(cw, res)
            if "memory" not in (res.get("limits") or {}):
                problem(cw, "no memory limit")
            if "cpu" not in (res.get("requests") or {}):
                problem(cw, "no cpu request")
            ports = {p.get("name"): p for p in c.get("ports") or [] if p.get("name")}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                p = c.get(probe)
                if not p:
                    continue
                for handler in ("httpGet", "tcpSocket"):
                    port = (p.get(handler) or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        problem(cw, f"{probe} uses port {port}, which the container does not name")
            for ef in c.get("envFrom") or []:
                ref = ef.get("configMapRef")
                if ref and ref["name"] not in by_kind.get("ConfigMap", {}) and not ref.get("optional"):
                    problem(cw, f"envFrom configMap {ref['name']} is not defined")
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] not in by_kind.get("Secret", {}) and not ref.get("optional"):
                    problem(cw, f"secret {ref['name']} is neither defined nor optional")
                if ref and ref["name"] in by_kind.get("Secret", {}):
                    sec = by_kind["Secret"][ref["name"]][1]
                    keys = set((sec.get("stringData") or {}).keys()) | set((sec.get("data") or {}).keys())
                    if ref["key"] not in keys:
                        problem(cw, f"secret {ref['name']} has no key {ref['key']}")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in vols:
                    problem(cw, f"volumeMount {m['name']} has no volume")
        for v in pod.get("volumes") or []:
            size = (v.get("emptyDir") or {}).get("sizeLimit")
            if size is not None and not QUANTITY.match(str(size)):
                problem(where, f"emptyDir {v['name']} sizeLimit {size!r} is not a quantity")
        for t in spec.get("volumeClaimTemplates") or []:
            check_quantities(f"{where} claim {t['metadata']['name']}", t["spec"].get("resources"))
        if d["kind"] == "StatefulSet":
            svc = by_kind.get("Service", {}).get(spec.get("serviceName"))
            if not svc or svc[1]["spec"].get("clusterIP") != "None":
                problem(where, f"serviceName {spec.get('serviceName')} is not a headless Service here")
    for name, (path, svc) in by_kind.get("Service", {}).items():
        where = f"{path}: Service/{name}"
        sel = svc["spec"].get("selector") or {}
        targets = [
            (wn, w)
            for wn, (_, w) in workloads.items()
            if all((w["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())
        ]
        if not targets:
            problem(where, f"selector {sel} matches no workload's pods")
            continue
        for p in svc["spec"].get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            proto = p.get("protocol", "TCP")
            for wn, w in targets:
                cports = [cp for c in w["spec"]["template"]["spec"]["containers"] for cp in c.get("ports") or []]
                ok = any(
                    (cp.get("name") == tp or cp.get("containerPort") == tp) and cp.get("protocol", "TCP") == proto
                    for cp in cports
                )
                if not ok:
                    problem(where, f"port {p.get('name')} targets {tp}/{proto}, which {wn} does not expose")


# ---------------------------------------------------------------- systemd environment files


def check_envfile(unit, envfile):
    defined = set()
    with open(envfile, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                m = re.match(r"#\s*([A-Z_][A-Z0-9_]*)=", line)
                if m:
                    defined.add(m.group(1))
                continue
            m = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
            if not m:
                problem(f"{envfile}:{n}", f"not KEY=value: {line}")
                continue
            if re.search(r"[`$]", m.group(2)):
                problem(f"{envfile}:{n}", "systemd environment files do no shell expansion; drop $ and `")
            defined.add(m.group(1))
    exec_vars = set()
    with open(unit, encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        m = re.match(r"^Environment=([A-Z_][A-Z0-9_]*)=", line)
        if m:
            defined.add(m.group(1))
        if line.startswith("Exec"):
            # $${VAR} is a literal $ for the shell; ${VAR} and $VAR are expanded by systemd.
            exec_vars |= set(re.findall(r"(?<!\$)\$\{?([A-Z_][A-Z0-9_]*)", line))
    for v in sorted(exec_vars - defined):
        problem(unit, f"Exec line uses ${v}, which neither Environment= nor {envfile} defines")


# ---------------------------------------------------------------- metrics and PromQL


def exported_metrics(src_dir):
    names = set()
    for dirpath, dirnames, files in os.walk(src_dir):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", "node_modules")]
        for fn in files:
            if fn.endswith(".rs"):
                with open(os.path.join(dirpath, fn), encoding="utf-8") as f:
                    names |= set(re.findall(r'"(hearth_[a-z0-9_]+)"', f.read()))
    full = set(names)
    for n in names:
        full |= {n + "_bucket", n + "_sum", n + "_count"}
    return full


def dashboard_exprs(path):
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    out = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("expr", "query"):
                if isinstance(node.get(key), str) and node[key].strip():
                    out.append(node[key])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dash.get("panels", dash))
    return out


def texts_with_metrics(path):
    if path.endswith(".json"):
        return dashboard_exprs(path)
    with open(path, encoding="utf-8") as f:
        # YAML comments may name metric families loosely (hearth_worker_*): only the content counts.
        return [re.sub(r"(^|\s)#.*", "", f.read(), flags=re.M)]


def check_metrics(src_dir, files):
    known = exported_metrics(src_dir)
    if not known:
        problem(src_dir, "no hearth_* metric names found in the sources")
    for path in files:
        for text in texts_with_metrics(path):
            for name in sorted(set(re.findall(r"\bhearth_[a-z0-9_]+", text))):
                if name not in known:
                    problem(path, f"metric {name} is not exported by the coordinator or worker")


def grafana_to_promql(expr):
    """Grafana's template variables replaced by values PromQL accepts."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}", "5m", expr)
    expr = re.sub(r"\$\{[A-Za-z0-9_:]+\}|\$[A-Za-z_][A-Za-z0-9_]*", "x", expr)
    return expr


def write_promql_rules(out, files):
    rules = []
    for path in files:
        for i, expr in enumerate(dashboard_exprs(path)):
            rules.append({"record": f"hearth:dashboard_query:{len(rules)}", "expr": grafana_to_promql(expr)})
    if not rules:
        problem(",".join(files), "no PromQL queries found in the dashboards")
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f)


# ---------------------------------------------------------------- Grafana


def check_grafana(dashboard, provisioning):
    uids = set()
    for path in provisioning:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        if doc.get("apiVersion") != 1:
            problem(path, f"apiVersion is {doc.get('apiVersion')!r}, Grafana provisioning needs 1")
        if not doc.get("datasources") and not doc.get("providers"):
            problem(path, "has neither datasources nor providers")
        for ds in doc.get("datasources") or []:
            for key in ("name", "type", "url"):
                if not ds.get(key):
                    problem(path, f"data source {ds.get('name')} has no {key}")
            if ds.get("uid"):
                uids.add(ds["uid"])
        for pr in doc.get("providers") or []:
            if not (pr.get("options") or {}).get("path"):
                problem(path, f"dashboard provider {pr.get('name')} has no options.path")
    with open(dashboard, encoding="utf-8") as f:
        dash = json.load(f)
    for key in ("uid", "title", "panels"):
        if key not in dash:
            problem(dashboard, f"no {key}")
    used = set()

    def walk(node):
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict) and isinstance(ds.get("uid"), str):
                used.add(ds["uid"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dash.get("panels", []))
    for uid in sorted(used):
        if uid.startswith("$") or uid.startswith("-- "):
            continue
        if uid not in uids:
            problem(dashboard, f"data source uid {uid} is not provisioned by {', '.join(provisioning)}")


# ---------------------------------------------------------------- README


def check_readme(readme, root, files):
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    for path in files:
        rel = os.path.relpath(path, root)
        if rel not in text:
            problem(readme, f"does not mention {rel} (list it under 'What CI checks and what it cannot')")
    base = os.path.dirname(readme)
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"^[a-z]+:", link):
            continue
        if not os.path.exists(os.path.normpath(os.path.join(base, link))):
            problem(readme, f"relative link {link} does not exist")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "dockerfile":
        for p in args[1:]:
            check_dockerfile(args[0], p)
    elif cmd == "compose":
        for p in args:
            check_compose(p)
    elif cmd == "k8s":
        check_k8s(args)
    elif cmd == "envfile":
        check_envfile(args[0], args[1])
    elif cmd == "metrics":
        check_metrics(args[0], args[1:])
    elif cmd == "promql":
        write_promql_rules(args[0], args[1:])
    elif cmd == "grafana":
        check_grafana(args[0], args[1:])
    elif cmd == "readme":
        check_readme(args[0], args[1], args[2:])
    else:
        print(f"unknown check {cmd}", file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
