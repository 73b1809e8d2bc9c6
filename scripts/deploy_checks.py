"""Structural checks of the packaging files, for scripts/check-deploy.sh.

    python scripts/deploy_checks.py <check> [args]

Each check prints what it verified and exits 1 naming what is wrong. They
look at what hadolint, `docker compose config` and the AWS CLI cannot: that
the files say what the services need (CONTRACT.md §3 names, health checks
through the `healthcheck` subcommand, no static AWS keys, …).
"""

import json
import re
import struct
import sys
import tomllib
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# CONTRACT.md §3, aliases included.
CONTRACT_NAMES = [
    "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_SECRET", "AWS_SESSION_TOKEN", "S3_BUCKET", "S3_BUCKET_NAME", "AWS_S3_BUCKET",
    "CLOUDFRONT_DOMAIN", "PRESIGN_EXPIRY_SECONDS", "CORS_ORIGINS", "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY", "SQS_QUEUE_URL", "CPU_SQS_QUEUE_URL",
    "CPU_QUEUE_URL", "DYNAMODB_TABLE", "GPU_INSTANCE_ID", "DATABASE_URL",
]
CANVAS_ONLY = {"S3_BUCKET", "S3_BUCKET_NAME", "AWS_S3_BUCKET", "CLOUDFRONT_DOMAIN",
               "PRESIGN_EXPIRY_SECONDS", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY",
               "SUPABASE_SECRET_KEY", "DATABASE_URL"}
ORCHESTRATOR_ONLY = {"SQS_QUEUE_URL", "CPU_SQS_QUEUE_URL", "CPU_QUEUE_URL", "DYNAMODB_TABLE",
                     "GPU_INSTANCE_ID"}
# Compose-only settings of .env.docker.example (not read by the services).
COMPOSE_ONLY = {"CANVAS_PORT", "ORCHESTRATOR_PORT", "MOTO_PORT", "CANVAS_IMAGE",
                "ORCHESTRATOR_IMAGE", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
# Set by the compose file itself, never from .env.
FIXED_IN_COMPOSE = {"PORT", "BIND_ADDR", "DATA_DIR", "SPOOL_DIR",
                    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"}

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)


def done(what):
    if problems:
        for p in problems:
            print(f"  - {p}")
        sys.exit(1)
    print(f"  ok: {what}")


# --- Dockerfiles -------------------------------------------------------------

def dockerfile(path, binary, port):
    text = (ROOT / path).read_text()
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines()]
    instr = [l for l in lines if l and not l.startswith("#")]
    froms = [l for l in instr if l.upper().startswith("FROM ")]
    check(len(froms) >= 3, f"{path}: multi-stage build expected (found {len(froms)} FROM)")
    check(any("cargo install cargo-chef" in l for l in instr), f"{path}: cargo-chef is not installed")
    check(any("cargo chef prepare" in l for l in instr), f"{path}: no `cargo chef prepare` (planner stage)")
    cook = next((i for i, l in enumerate(instr) if "cargo chef cook" in l), None)
    check(cook is not None, f"{path}: no `cargo chef cook` (dependency layer)")
    if cook is not None:
        check("--release" in instr[cook] and "--locked" in instr[cook],
              f"{path}: `cargo chef cook` must use --release --locked")
        source_copy = [i for i, l in enumerate(instr) if re.match(r"COPY\s+\.\s+\.", l) and i > cook]
        check(bool(source_copy), f"{path}: the sources must be copied after the dependency layer")
    build = [l for l in instr if re.search(r"cargo build\b", l)]
    check(any("--release" in l and "--locked" in l and binary in l for l in build),
          f"{path}: `cargo build --release --locked` of {binary} expected")
    runtime = froms[-1] if froms else ""
    check(bool(re.search(r"gcr\.io/distroless/cc-debian12(:nonroot)?|debian:bookworm-slim", runtime)),
          f"{path}: runtime must be distroless cc-debian12 or debian:bookworm-slim, is {runtime!r}")
    last_stage = instr[instr.index(runtime):] if runtime else []
    users = [l.split(None, 1)[1] for l in last_stage if l.upper().startswith("USER ")]
    check(bool(users) and not re.match(r"^(root|0)(:|$)", users[-1]),
          f"{path}: the runtime stage must switch to a non-root USER")
    copies = [l for l in last_stage if l.upper().startswith("COPY ")]
    check(all("--from=" in l for l in copies), f"{path}: the runtime stage copies from build stages only")
    check(not any(l.upper().startswith("RUN ") for l in last_stage),
          f"{path}: no RUN in the runtime stage (nothing but the binary)")
    check(any(f"/app/{binary}" in l for l in copies), f"{path}: the binary goes to /app/{binary}")
    health = [l for l in last_stage if l.upper().startswith("HEALTHCHECK ")]
    check(bool(health) and f'CMD ["/app/{binary}", "healthcheck"]' in health[-1],
          f'{path}: HEALTHCHECK … CMD ["/app/{binary}", "healthcheck"] expected')
    check(any(l.upper().startswith(f"EXPOSE {port}") for l in last_stage), f"{path}: EXPOSE {port} expected")
    check(any(l.upper().startswith("ENTRYPOINT ") and f'"/app/{binary}"' in l for l in last_stage),
          f"{path}: ENTRYPOINT [\"/app/{binary}\"] expected")
    check(not any(re.search(r"\b(curl|wget)\b", l) for l in last_stage), f"{path}: no curl/wget in the image")
    done(f"{path}: {len(froms)} stages, cargo-chef dependency layer, release --locked, "
         f"{runtime.split()[1]}, USER {users[-1] if users else '?'}, HEALTHCHECK via `{binary} healthcheck`, EXPOSE {port}")


def dockerignore():
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    rules = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    check(rules and rules[0] == "*", ".dockerignore: expected an allow list starting with `*`")
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for needed in ["Cargo.toml", "Cargo.lock"]:
        check(needed in allowed, f".dockerignore: {needed} must be allowed")
    for member in members:
        top = member.split("/")[0]
        check(member in allowed or top in allowed,
              f".dockerignore: workspace member {member} is not in the build context")
    for secret in ["**/.env", "**/target/"]:
        check(secret in rules, f".dockerignore: {secret} must be excluded")
    done(f".dockerignore: allow list covers the {len(members)} workspace members, excludes target/ and .env")


# --- compose -------------------------------------------------------------------

def env_names(service):
    env = service.get("environment") or []
    if isinstance(env, dict):
        return set(env)
    return {e.split("=", 1)[0] for e in env}


def read_env_file(path):
    values = {}
    for line in (ROOT / path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def compose(path, env_path):
    import yaml  # in the check venv

    doc = yaml.safe_load((ROOT / path).read_text())
    services = doc.get("services", {})
    for name, binary, port in [("canvas-service", "canvas-service", 9000), ("orchestrator", "orchestrator", 8080)]:
        s = services.get(name)
        check(s is not None, f"{path}: service {name} missing")
        if s is None:
            continue
        check(not s.get("profiles"), f"{path}: {name} must run without a profile")
        check(s.get("build", {}).get("dockerfile") == f"Dockerfile.{'canvas' if name == 'canvas-service' else 'orchestrator'}",
              f"{path}: {name} must build from its Dockerfile")
        test = (s.get("healthcheck") or {}).get("test")
        check(test == ["CMD", f"/app/{binary}", "healthcheck"],
              f"{path}: {name} healthcheck must be [CMD, /app/{binary}, healthcheck], is {test}")
        check(s.get("restart") in ("unless-stopped", "always", "on-failure"), f"{path}: {name} needs a restart policy")
        limits = ((s.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        check("memory" in limits and "cpus" in limits, f"{path}: {name} needs cpu and memory limits")
        check(any(str(p).endswith(f":{port}") for p in s.get("ports", [])), f"{path}: {name} must publish {port}")
        names = env_names(s)
        wanted = [n for n in CONTRACT_NAMES
                  if not (name == "canvas-service" and n in ORCHESTRATOR_ONLY)
                  and not (name == "orchestrator" and n in CANVAS_ONLY)]
        missing = [n for n in wanted if n not in names]
        check(not missing, f"{path}: {name} does not pass {', '.join(missing)} (CONTRACT §3)")
        fixed = {e.split("=", 1)[0]: e.split("=", 1)[1] for e in s.get("environment", []) if "=" in e}
        check(fixed.get("LOG_FORMAT", "").endswith("json}") or fixed.get("LOG_FORMAT") == "json",
              f"{path}: {name} should log JSON by default")
        deps = s.get("depends_on") or {}
        for dep, cond in deps.items():
            check(cond.get("required") is False, f"{path}: {name} → {dep} must be required: false (profile local only)")
    for name in ["postgres", "moto", "init"]:
        s = services.get(name)
        check(s is not None and s.get("profiles") == ["local"], f"{path}: {name} must exist in profile local")
    if "postgres" in services:
        check(str(services["postgres"].get("image", "")).startswith("postgres:15"), f"{path}: postgres must be postgres:15")
        check("healthcheck" in services["postgres"], f"{path}: postgres needs a healthcheck")
    if "moto" in services:
        check("healthcheck" in services["moto"], f"{path}: moto needs a healthcheck")
    if "init" in services:
        init = services["init"]
        check(init.get("restart") == "no", f"{path}: init is a one-shot (restart: \"no\")")
        check(init.get("depends_on", {}).get("moto", {}).get("condition") == "service_healthy",
              f"{path}: init must wait for a healthy moto")
        mounts = [str(v) for v in init.get("volumes", [])]
        check(any(m.startswith("./deploy/local/init-moto.py:") for m in mounts), f"{path}: init must mount deploy/local/init-moto.py")
        check((ROOT / "deploy/local/init-moto.py").is_file(), "deploy/local/init-moto.py missing")
        for n in ["SQS_QUEUE_URL", "CPU_SQS_QUEUE_URL", "GPU_DLQ_URL", "CPU_DLQ_URL", "DYNAMODB_TABLE", "GPU_INSTANCE_ID", "S3_BUCKET"]:
            check(n in env_names(init), f"{path}: init does not get {n}")

    # Every name compose takes from .env is documented there, and back.
    example = read_env_file(env_path)
    used = set()
    for s in services.values():
        for e in s.get("environment") or []:
            if isinstance(e, str) and "=" not in e:
                used.add(e)
    used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / path).read_text()))
    used -= FIXED_IN_COMPOSE
    undocumented = sorted(used - set(example))
    check(not undocumented, f"{env_path} lacks {', '.join(undocumented)} (used by {path})")
    unused = sorted(set(example) - used - COMPOSE_ONLY)
    check(not unused, f"{env_path} sets {', '.join(unused)}, which {path} never passes on")
    done(f"{path}: services canvas-service, orchestrator (+ postgres, moto, init in profile local), "
         f"health checks via the healthcheck subcommand, restart policies, limits, all CONTRACT §3 names; "
         f"{env_path} documents exactly the {len(used)} names compose reads")


def env_example(env_path):
    example = read_env_file(env_path)
    missing = [n for n in CONTRACT_NAMES if n not in example]
    check(not missing, f"{env_path}: CONTRACT §3 names missing: {', '.join(missing)}")
    readme = (ROOT / "README.md").read_text()
    documented = set()
    for section in re.split(r"\n### ", readme):
        if section.startswith("Configuration"):
            for row in section.splitlines():
                if row.startswith("| `"):
                    first_cell = row.split("|")[1]
                    documented |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    check(documented, "README.md: no configuration table found")
    missing = sorted(documented - set(example) - FIXED_IN_COMPOSE)
    check(not missing, f"{env_path}: variables of the README's configuration tables missing: {', '.join(missing)}")
    text = (ROOT / env_path).read_text()
    for line in text.splitlines():
        m = re.match(r"(AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID)=(.+)", line)
        if m:
            check(m.group(2) in ("testing", ""), f"{env_path}: {m.group(1)} must be a placeholder, not a key")
    comments = sum(1 for l in text.splitlines() if l.startswith("#"))
    groups = len(re.findall(r"^# --- ", text, re.M))
    check(groups >= 6 and comments >= 40, f"{env_path}: expected commented groups ({groups} groups, {comments} comment lines)")
    done(f"{env_path}: {len(example)} variables in {groups} commented groups; all CONTRACT §3 names and "
         f"the {len(documented)} names of the README's configuration tables")


# --- ECS task definition ----------------------------------------------------------

def task_definition(path):
    raw = (ROOT / path).read_text()
    td = json.loads(raw)
    check(td.get("requiresCompatibilities") == ["FARGATE"] and td.get("networkMode") == "awsvpc",
          f"{path}: Fargate with awsvpc expected")
    check((td.get("cpu"), td.get("memory")) == ("256", "512"), f"{path}: 0.25 vCPU / 512 MiB expected")
    check("taskRoleArn" in td and "executionRoleArn" in td, f"{path}: task and execution roles expected")
    containers = {c["name"]: c for c in td.get("containerDefinitions", [])}
    check(set(containers) == {"canvas-service", "orchestrator"}, f"{path}: the two containers expected, got {sorted(containers)}")
    for name, c in containers.items():
        port = 9000 if name == "canvas-service" else 8080
        check(c.get("essential") is True, f"{path}: {name} must be essential")
        check([p["containerPort"] for p in c.get("portMappings", [])] == [port], f"{path}: {name} must map {port}")
        hc = c.get("healthCheck", {}).get("command")
        check(hc == ["CMD", f"/app/{name}", "healthcheck"], f"{path}: {name} healthCheck must be CMD /app/{name} healthcheck, is {hc}")
        log = c.get("logConfiguration", {})
        check(log.get("logDriver") == "awslogs" and "awslogs-group" in log.get("options", {}),
              f"{path}: {name} must log with awslogs")
        env = {e["name"]: e["value"] for e in c.get("environment", [])}
        check(env.get("LOG_FORMAT") == "json", f"{path}: {name} must set LOG_FORMAT=json")
        for forbidden in ["AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_SECRET",
                          "AWS_SESSION_TOKEN", "DATABASE_URL", "ADMIN_TOKEN", "AWS_ENDPOINT_URL"]:
            check(forbidden not in env, f"{path}: {name} must not carry {forbidden} in its environment")
        secrets = {s["name"] for s in c.get("secrets", [])}
        check(all(s["valueFrom"].startswith("${") or s["valueFrom"].startswith("arn:aws:secretsmanager:")
                  for s in c.get("secrets", [])), f"{path}: {name} secrets must come from Secrets Manager")
        if name == "canvas-service":
            check(secrets == {"DATABASE_URL"}, f"{path}: canvas-service must get DATABASE_URL as a secret")
            check("S3_BUCKET" in env and "CLOUDFRONT_DOMAIN" in env, f"{path}: canvas-service needs S3_BUCKET and CLOUDFRONT_DOMAIN")
        else:
            check(secrets == {"ADMIN_TOKEN"}, f"{path}: orchestrator must get ADMIN_TOKEN as a secret")
            for n in ["SQS_QUEUE_URL", "CPU_SQS_QUEUE_URL", "GPU_DLQ_URL", "CPU_DLQ_URL", "DYNAMODB_TABLE", "GPU_INSTANCE_ID"]:
                check(n in env, f"{path}: orchestrator needs {n}")
    placeholders = sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", raw)))
    check("AWS_ACCOUNT_ID" in placeholders and "AWS_REGION" in placeholders,
          f"{path}: ${{AWS_ACCOUNT_ID}} and ${{AWS_REGION}} placeholders expected")
    done(f"{path}: Fargate 256/512, canvas-service + orchestrator, CMD healthcheck, awslogs, LOG_FORMAT=json, "
         f"DATABASE_URL/ADMIN_TOKEN from Secrets Manager, no static keys; placeholders {', '.join(placeholders)}")


def policies():
    task = json.loads((ROOT / "deploy/task-role-policy.json").read_text())
    actions = {a for s in task["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    for a in ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "sqs:SendMessage", "sqs:ReceiveMessage",
              "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "dynamodb:GetItem",
              "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query",
              "dynamodb:BatchGetItem", "ec2:DescribeInstances", "ec2:StartInstances", "ec2:StopInstances"]:
        check(a in actions, f"task-role-policy.json: {a} missing")
    for s in task["Statement"] + json.loads((ROOT / "deploy/execution-role-policy.json").read_text())["Statement"]:
        acts = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        check(all("*" not in a for a in acts), f"policy statement {s.get('Sid')}: wildcard action")
        if s["Resource"] == "*":
            check(set(acts) <= {"ec2:DescribeInstances", "ecr:GetAuthorizationToken"},
                  f"policy statement {s.get('Sid')}: Resource * only for actions without resource-level permissions")
    done("IAM policies: the task role's S3/SQS/DynamoDB/EC2 actions, no wildcard actions, Resource * only where AWS requires it")


# --- helpers for the smoke test ------------------------------------------------------

def service_env(service, replacements):
    """Prints NAME=VALUE lines of a service's environment from `docker compose
    config --format json` on stdin, with each OLD=NEW replacement applied."""
    cfg = json.load(sys.stdin)
    pairs = [r.split("=", 1) for r in replacements]
    for name, value in (cfg["services"][service].get("environment") or {}).items():
        if value is None:
            continue
        for old, new in pairs:
            value = value.replace(old, new)
        print(f"{name}={value}")


def png(path):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"\x00\xff\x00\x00"  # one red pixel
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    Path(path).write_bytes(data)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {
        "dockerfile": lambda: dockerfile(args[0], args[1], int(args[2])),
        "dockerignore": dockerignore,
        "compose": lambda: compose(args[0], args[1]),
        "env-example": lambda: env_example(args[0]),
        "task-definition": lambda: task_definition(args[0]),
        "policies": policies,
        "service-env": lambda: service_env(args[0], args[1:]),
        "png": lambda: png(args[0]),
    }[command]()
