"""No drift between the Functions app and `infra/`: every queue, container, app setting, connection, event route and
role the code needs is declared in the Bicep.

What the code needs is read from the code itself: the bindings registered in `function_app.py` (through the
azure-functions SDK), the names in `shared.settings.Settings`, and every app setting the app's modules read (found in
their syntax trees). The Bicep compiler cannot run here, so the Bicep is read as text; the files follow the usual
formatting (two-space indents, one field per line), which the parsing below relies on.
"""

from __future__ import annotations

import ast
import json
import re
import runpy
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from shared.finetune.run_events import JOB_TAG, RUN_STATUS_CHANGED
from shared.jobs.events import TYPES as EVENT_TYPES
from shared.pipeline.ingest import MANIFEST_NAMES
from shared.ports import TERMINAL_STATUSES
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"

# Built-in role ids as Azure's documentation lists them (infra/roles.json must agree).
KNOWN_ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Azure Service Bus Data Sender": "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
    "Azure Service Bus Data Receiver": "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
    "AzureML Data Scientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    "Cognitive Services OpenAI User": "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
}
# Functions reading a setting whose name is data: `required` is handed names its callers write (and are scanned for);
# the teacher key's setting is named by the manifest (teacher.key_setting), and infra declares the documented one.
DYNAMIC_READERS = {"shared/services.py:required", "shared/teacher/openai_compatible.py:_key"}
APP_PRINCIPAL = {"identity.properties.principalId", "principalId"}  # the app identity's, in app.bicep and the modules
MAIN_PRINCIPAL = "identity.outputs.principalId"  # the same, in main.bicep
# App settings a Flex Consumption app refuses: functionAppConfig carries the runtime and the deployment instead.
# Settings the platform sets itself (on every instance; while App Service authentication is on): never declared
PLATFORM_SET = {"WEBSITE_INSTANCE_ID", "WEBSITE_AUTH_ENABLED"}
FLEX_REFUSED = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
                "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING"}
EVENTS_SETTING = "DISTILL_EVENTS_TOPIC_ENDPOINT"  # where the app publishes Distill's own events
EVENTS_QUEUE = "distill-events"  # the storage queue the ready-made subscription fills
BLOB_APIS = {"PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"}  # the calls that complete a blob
# What subscribing the workspace to a partner model's Marketplace offer takes beyond AzureML Data Scientist, as Azure's
# guide to partner models lists it: accepting the offer's terms, at the Azure subscription; the SaaS resource the
# subscription makes, in the workspace's resource group.
MARKETPLACE_TERMS = {"Microsoft.MarketplaceOrdering/agreements/offers/plans/read",
                     "Microsoft.MarketplaceOrdering/agreements/offers/plans/sign/action",
                     "Microsoft.MarketplaceOrdering/offerTypes/publishers/offers/plans/agreements/read",
                     "Microsoft.Marketplace/offerTypes/publishers/offers/plans/agreements/read",
                     "Microsoft.SaaS/register/action"}
MARKETPLACE_RESOURCES = {"Microsoft.SaaS/resources/read", "Microsoft.SaaS/resources/write"}
SUBSCRIBES = "marketplace_subscriptions.begin_create_or_update"  # the code subscribing a workspace to an offer


# ---- What the code needs -------------------------------------------------------------------------------------------

@dataclass
class Needs:
    queues: set[str] = field(default_factory=set)
    containers: set[str] = field(default_factory=set)
    connections: dict[str, str] = field(default_factory=dict)  # binding connection prefix -> "blob" | "serviceBus"
    settings: set[str] = field(default_factory=set)
    key_settings: set[str] = field(default_factory=set)  # teacher key settings the docs and examples name
    blob_events: dict[str, str] = field(default_factory=dict)  # Event Grid blob-triggered function -> container
    grid_functions: set[str] = field(default_factory=set)  # Event Grid-triggered functions
    timers: bool = False
    routes: dict[str, tuple[str, str]] = field(default_factory=dict)  # HTTP function -> (route, auth level)
    partner_students: bool = False  # the app creates Marketplace subscriptions for partners' students


@cache
def registered_bindings() -> tuple[dict, ...]:
    """Every binding of every function in function_app.py, with its function's name.

    function_app.py runs into a fresh namespace: the SDK allows one get_functions() per app object, and the local
    runtime may already have asked the imported one.
    """
    app = runpy.run_path(str(ROOT / "function_app.py"))["app"]
    return tuple({"function": f.get_function_name(), **b.get_dict_repr()} for f in app.get_functions()
                 for b in f.get_bindings())


def module_file(name: str) -> Path | None:
    path = ROOT / (name.replace(".", "/") + ".py")
    package = ROOT / name.replace(".", "/") / "__init__.py"
    return path if path.exists() else package if package.exists() else None


def app_modules() -> dict[str, Path]:
    """function_app.py and every project module it imports, at any depth, lazy imports inside functions included."""
    found: dict[str, Path] = {}
    todo = ["function_app"]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if name in found or path is None:
            continue
        found[name] = path
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return found


def _env_name_arg(node: ast.Call) -> ast.expr | None:
    """The name argument of an environment read: `<...environ>.get(NAME)`, `os.getenv(NAME)`, `required(env, NAME)`."""
    f = node.func
    if isinstance(f, ast.Attribute) and f.attr == "get" and ast.unparse(f.value).lower().endswith("environ"):
        return node.args[0] if node.args else None
    if (isinstance(f, ast.Attribute) and f.attr == "getenv") or (isinstance(f, ast.Name) and f.id == "required"):
        return node.args[-1] if node.args else None
    return None


def settings_read(modules: dict[str, Path]) -> tuple[dict[str, str], set[str]]:
    """{setting name: where it is read} over the modules, and the functions ("file:name") reading a setting whose
    name is data."""
    names: dict[str, str] = {}
    dynamic: set[str] = set()
    for path in modules.values():
        tree = ast.parse(path.read_text())
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                     and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                     for t in n.targets if isinstance(t, ast.Name)}
        enclosing = {id(inner): f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                     for inner in ast.walk(f)}  # innermost wins: walk visits outer functions first
        for node in ast.walk(tree):
            arg = _env_name_arg(node) if isinstance(node, ast.Call) else \
                node.slice if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ") else None
            if arg is None:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.setdefault(arg.value, where)
            elif isinstance(arg, ast.Name) and arg.id in constants:
                names.setdefault(constants[arg.id], where)
            else:
                dynamic.add(f"{path.relative_to(ROOT)}:{enclosing.get(id(node), '<module>')}")
    return names, dynamic


def documented_key_settings() -> set[str]:
    """Teacher key setting names the examples and docs tell users to write (not `base_key_setting`: a student's)."""
    texts = [p.read_text() for p in (*ROOT.glob("examples/**/*.yaml"), *ROOT.glob("docs/*.md"))]
    return {m for t in texts for m in re.findall(r"(?<!\w)(?:api_key_setting|key_setting):\s*`?([A-Z][A-Z0-9_]+)", t)}


def code_needs() -> Needs:
    needs = Needs()
    settings = Settings()
    needs.queues |= {settings.shard_queue, settings.completion_queue}  # what the pipeline sends to
    needs.containers |= {settings.input_container, settings.jobs_container, settings.cache_container}
    for b in registered_bindings():
        if b["type"] == "serviceBusTrigger":
            needs.queues.add(b["queueName"].split("/")[0])  # "<queue>/$DeadLetterQueue" is a sub-queue
            needs.connections[b["connection"]] = "serviceBus"
        elif b["type"] == "blobTrigger":
            container = b["path"].split("/")[0]
            needs.containers.add(container)
            needs.connections[b["connection"]] = "blob"
            if b.get("source") == "EventGrid":
                needs.blob_events[b["function"]] = container
        elif b["type"] == "eventGridTrigger":
            needs.grid_functions.add(b["function"])
        elif b["type"] == "timerTrigger":
            needs.timers = True
        elif b["type"] == "httpTrigger":
            needs.routes[b["function"]] = (b["route"], str(getattr(b["authLevel"], "value", b["authLevel"])).lower())
    modules = app_modules()
    needs.partner_students = any(SUBSCRIBES in path.read_text() for path in modules.values())
    names, dynamic = settings_read(modules)
    assert dynamic == DYNAMIC_READERS, f"a new setting read by a computed name, review it: {dynamic - DYNAMIC_READERS}"
    needs.settings = set(names) - PLATFORM_SET
    needs.key_settings = documented_key_settings()
    return needs


# ---- What the Bicep declares ---------------------------------------------------------------------------------------

RESOURCE = re.compile(r"^resource\s+(\w+)\s+'([^'@]+)@[^']+'\s+(?:existing\s+)?=\s*(?:if\s*\(.*?\)\s*)?\{", re.M)
MODULE = re.compile(r"^module\s+(\w+)\s+'([^']+)'\s+=\s*(?:if\s*\(.*?\)\s*)?\{", re.M)
VAR = re.compile(r"^var\s+(\w+)\s*=\s*'([^']*)'", re.M)


@dataclass(frozen=True)
class Resource:
    file: str
    symbol: str
    type: str
    body: str

    def field(self, name: str) -> str | None:
        """A top-level field's raw value (two-space indent)."""
        m = re.search(rf"^  {name}:\s*(.+)$", self.body, re.M)
        return m.group(1).strip() if m else None


def blocks(pattern: re.Pattern[str], files: dict[str, str]) -> list[Resource]:
    """Every top-level `resource` (or `module`) block matched by `pattern`, as (symbol, type or module path, body)."""
    found = []
    for name, text in files.items():
        for m in pattern.finditer(text):
            depth, i = 0, m.end() - 1
            for i in range(m.end() - 1, len(text)):  # i ends on the closing brace
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                if depth == 0:
                    break
            found.append(Resource(name, m.group(1), m.group(2), text[m.end():i]))
    return found


def resources(files: dict[str, str]) -> list[Resource]:
    return blocks(RESOURCE, files)


def resolve(expr: str | None, text: str) -> str:
    """A Bicep string expression's value: a literal (with `${var}` filled in) or a var holding a literal."""
    values = dict(VAR.findall(text))
    expr = re.sub(r"\s+//.*$", "", expr or "").strip()  # a trailing comment (not the // of a URL)
    if expr.startswith("'") and expr.endswith("'"):
        return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), expr[1:-1])
    return values.get(expr, expr)


def of_type(found: list[Resource], type_: str) -> list[Resource]:
    return [r for r in found if r.type.lower() == type_.lower()]


def app_settings(found: list[Resource]) -> dict[str, str]:
    """{name: raw value} of the app settings resource (sites/config named appsettings)."""
    block = next((r for r in of_type(found, "Microsoft.Web/sites/config") if r.field("name") == "'appsettings'"), None)
    if block is None:
        return {}
    return dict(re.findall(r"^\s+'?([A-Za-z_][A-Za-z0-9_]*)'?:\s*(.+)$", block.body, re.M))


def quoted(text: str) -> set[str]:
    return set(re.findall(r"'([^']*)'", text))


# ---- The checks ----------------------------------------------------------------------------------------------------

def check_queues(needs: Needs, found: list[Resource], files: dict[str, str]) -> Iterator[str]:
    queues = {resolve(q.field("name"), files[q.file]): q
              for q in of_type(found, "Microsoft.ServiceBus/namespaces/queues")}
    for name in sorted(needs.queues):
        queue = queues.get(name)
        if queue is None:
            yield f"queue {name}: no Microsoft.ServiceBus/namespaces/queues resource declares it"
            continue
        expected = {"requiresDuplicateDetection": "true", "duplicateDetectionHistoryTimeWindow": "'PT24H'",
                    "deadLetteringOnMessageExpiration": "true"}
        for key, value in expected.items():
            if not re.search(rf"^\s+{key}:\s*{re.escape(value)}", queue.body, re.M):
                yield f"queue {name}: {key} must be {value} (message ids are deduplicated; expired shards fail jobs)"
        for key in ("lockDuration", "maxDeliveryCount"):
            if not re.search(rf"^\s+{key}:", queue.body, re.M):
                yield f"queue {name}: {key} must be set deliberately"
    for namespace in of_type(found, "Microsoft.ServiceBus/namespaces"):
        if not re.search(r"name:\s*'(Standard|Premium)'", namespace.field("sku") or ""):
            yield f"Service Bus namespace {namespace.symbol}: duplicate detection needs the Standard or Premium tier"


def account_of(setting: str | None) -> str | None:
    """The storage account symbol an app setting's value is taken from (`dataStorage.properties...`)."""
    m = re.match(r"(\w+)\.(?:properties|name)", setting or "")
    return m.group(1) if m else None


def check_storage(needs: Needs, found: list[Resource], settings: dict[str, str],
                  files: dict[str, str]) -> Iterator[str]:
    by_symbol = {(r.file, r.symbol): r for r in found}
    for prefix, kind in needs.connections.items():
        if kind != "blob":
            continue
        account = account_of(settings.get(f"{prefix}__serviceUri") or settings.get(f"{prefix}__blobServiceUri"))
        for container in of_type(found, "Microsoft.Storage/storageAccounts/blobServices/containers"):
            name = resolve(container.field("name"), files[container.file])
            if name not in needs.containers:
                continue
            service = by_symbol.get((container.file, container.field("parent") or ""))
            owner = service.field("parent") if service else None
            if owner != account:
                yield f"container {name}: belongs to {owner}, not to the account {prefix} connects to ({account})"
    declared = {resolve(c.field("name"), files[c.file])
                for c in of_type(found, "Microsoft.Storage/storageAccounts/blobServices/containers")}
    for name in sorted(needs.containers - declared):
        yield f"container {name}: no blobServices/containers resource declares it"


def check_settings(needs: Needs, settings: dict[str, str], site: Resource | None) -> Iterator[str]:
    names = set(settings)
    for name in sorted(needs.settings):
        # A connection read as a connection string is satisfied by its identity-based form (`<name>__...`).
        if name not in names and not (name in needs.connections and any(n.startswith(f"{name}__") for n in names)):
            yield f"app setting {name}: read by the code, not declared in infra"
    required = {"serviceBus": ("__fullyQualifiedNamespace",), "blob": ("__serviceUri",)}
    user_assigned = site is not None and "'UserAssigned'" in (site.body or "")
    for prefix, kind in sorted(needs.connections.items()):
        for suffix in required[kind]:
            if f"{prefix}{suffix}" not in names:
                yield f"connection {prefix}: app setting {prefix}{suffix} is missing"
        if settings.get(f"{prefix}__credential", "").strip() != "'managedidentity'":
            yield f"connection {prefix}: {prefix}__credential must be 'managedidentity'"
        if user_assigned and f"{prefix}__clientId" not in names:
            yield f"connection {prefix}: {prefix}__clientId must name the user-assigned identity"
    for name in sorted(n for n in names if n.endswith("__fullyQualifiedNamespace")):
        if ".windows.net" in settings[name]:
            yield f"app setting {name}: take the host from the resource (serviceBusEndpoint), not a fixed suffix"
    if not {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__blobServiceUri"} & names:
        yield "AzureWebJobsStorage: the host's storage connection is missing"
    if user_assigned and "AZURE_CLIENT_ID" not in names:
        yield "AZURE_CLIENT_ID: DefaultAzureCredential in the code needs it to pick the user-assigned identity"
    for name in sorted(needs.key_settings):
        if "@Microsoft.KeyVault(SecretUri=" not in settings.get(name, ""):
            yield f"app setting {name}: the teacher key the docs name must be a Key Vault reference"
    for name in sorted(names & FLEX_REFUSED):
        yield f"app setting {name}: Flex Consumption refuses it (the runtime is set in functionAppConfig)"
    for name in sorted(n for n in names if n.startswith(("DISTILL_", "AZUREML_"))):
        if name not in needs.settings:
            yield f"app setting {name}: declared in infra but never read by the app"


def check_events(needs: Needs, found: list[Resource], files: dict[str, str]) -> Iterator[str]:
    subscriptions = of_type(found, "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    for function, container in sorted(needs.blob_events.items()):
        hooks = [s for s in subscriptions
                 if f"functionName=Host.Functions.{function}&" in resolve(_line(s, "endpointUrl"), files[s.file])]
        if not hooks:
            yield f"function {function}: no Event Grid subscription calls its blob extension webhook"
        for s in hooks:
            text = files[s.file]
            if "systemKeys.blobs_extension" not in s.body:
                yield f"function {function}: the webhook must carry the blobs_extension system key"
            if "'Microsoft.Storage.BlobCreated'" not in s.body:
                yield f"function {function}: the subscription must include Microsoft.Storage.BlobCreated"
            if resolve(_line(s, "subjectBeginsWith"), text) != f"/blobServices/default/containers/{container}/":
                yield f"function {function}: subjectBeginsWith must select the {container} container"
            if not quoted(_filter_values(s, "data.api")) >= BLOB_APIS:
                yield f"function {function}: the data.api filter must admit {sorted(BLOB_APIS)}"
            if quoted(_filter_values(s, "subject")) != {f"/{n}" for n in MANIFEST_NAMES}:
                yield f"function {function}: the subject filter must end with the manifest names {MANIFEST_NAMES}"
    for function in sorted(needs.grid_functions):
        if not any(resolve(f"'{m}'", t).endswith(f"/functions/{function}")
                   for t in files.values() for m in re.findall(r"'([^']*/functions/[^']*)'", t)):
            yield f"function {function}: no Event Grid subscription delivers to it"
    runs = [s for s in subscriptions if f"'{RUN_STATUS_CHANGED}'" in s.body]
    if needs.grid_functions and not runs:
        yield f"run events: no subscription includes {RUN_STATUS_CHANGED}"
    for s in runs:
        if f"'data.runTags.{JOB_TAG}'" not in s.body:
            yield f"run events: the subscription must filter on the data.runTags.{JOB_TAG} tag"
        if quoted(_filter_values(s, "data.runStatus")) != set(TERMINAL_STATUSES):
            yield f"run events: the runStatus filter must be the terminal statuses {sorted(TERMINAL_STATUSES)}"


def _line(r: Resource, key: str) -> str | None:
    m = re.search(rf"^\s+{key}:\s*(.+)$", r.body, re.M)
    return m.group(1) if m else None


def _filter_values(r: Resource, key: str) -> str:
    """The `values` of the advanced filter on `key` (the text of its list)."""
    m = re.search(rf"key:\s*'{re.escape(key)}'\s*values:\s*\[([^\]]*)\]", r.body)
    return m.group(1) if m else ""


def needed_roles(needs: Needs, settings: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(role, scope resource type, scope symbol when it must be one account) the app's identity needs."""
    data = account_of(next((v for k, v in settings.items() if k.endswith(("__serviceUri", "__blobServiceUri"))), None))
    host = account_of(settings.get("AzureWebJobsStorage__accountName"))
    account = "Microsoft.Storage/storageAccounts"
    roles = [
        ("Storage Blob Data Owner", account, host),  # the host's keys, leases and the app package
        ("Storage Queue Data Contributor", account, host),  # the blob trigger's queue (serviceUri form)
        ("Storage Blob Data Contributor", account, data),  # the pipeline's reads and conditional writes
        ("AzureML Data Scientist", "Microsoft.MachineLearningServices/workspaces", None),
        ("Cognitive Services OpenAI User", "Microsoft.CognitiveServices/accounts", None),  # azure_openai with entra
        ("Key Vault Secrets User", "Microsoft.KeyVault/vaults", None),  # the teacher key reference
        ("Monitoring Metrics Publisher", "Microsoft.Insights/components", None),  # telemetry with Entra auth
    ]
    if any(kind == "serviceBus" for kind in needs.connections.values()):
        roles += [("Azure Service Bus Data Receiver", "Microsoft.ServiceBus/namespaces", None),
                  ("Azure Service Bus Data Sender", "Microsoft.ServiceBus/namespaces", None)]
    return roles


def check_roles(needs: Needs, found: list[Resource], settings: dict[str, str], role_ids: dict[str, str]
                ) -> Iterator[str]:
    for name, guid in role_ids.items():
        if KNOWN_ROLE_IDS.get(name) != guid:
            yield f"role {name}: infra/roles.json has {guid}, the documented id is {KNOWN_ROLE_IDS.get(name)}"
    by_symbol = {(r.file, r.symbol): r for r in found}
    assignments = of_type(found, "Microsoft.Authorization/roleAssignments")
    for role, scope_type, scope_symbol in needed_roles(needs, settings):
        scopes = [by_symbol.get((a.file, a.field("scope") or "")) for a in assignments
                  if f"roles['{role}']" in (_line(a, "roleDefinitionId") or "")
                  and (_line(a, "principalId") or "").strip() in APP_PRINCIPAL]
        if not any(s is not None and s.type == scope_type and scope_symbol in (None, s.symbol) for s in scopes):
            where = f"{scope_type} {scope_symbol or ''}".strip()
            yield f"role {role}: no assignment on the {where} the app needs it on"


def check_published_events(found: list[Resource], settings: dict[str, str], files: dict[str, str]
                           ) -> Iterator[str]:
    """Distill's own events: a CloudEvents topic the app's setting names and its identity may send to, and the
    ready-made subscription that delivers every event type to the `distill-events` storage queue."""
    topics = of_type(found, "Microsoft.EventGrid/topics")
    named = [t for t in topics if f"{t.symbol}.properties.endpoint" in settings.get(EVENTS_SETTING, "")]
    if not named:
        yield f"app setting {EVENTS_SETTING}: must be the endpoint of a Microsoft.EventGrid/topics resource"
        return
    topic = named[0]
    if "inputSchema: 'CloudEventSchemaV1_0'" not in topic.body:
        yield f"topic {topic.symbol}: inputSchema must be 'CloudEventSchemaV1_0' (the app sends CloudEvents)"
    senders = [a for a in of_type(found, "Microsoft.Authorization/roleAssignments")
               if "roles['EventGrid Data Sender']" in (_line(a, "roleDefinitionId") or "")
               and a.field("scope") == topic.symbol and (_line(a, "principalId") or "").strip() in APP_PRINCIPAL]
    if not senders:
        yield f"role EventGrid Data Sender: no assignment on the topic {topic.symbol} for the app's identity"
    queues = {resolve(q.field("name"), files[q.file]) for q in
              of_type(found, "Microsoft.Storage/storageAccounts/queueServices/queues")}
    subscriptions = [s for s in of_type(found, "Microsoft.EventGrid/topics/eventSubscriptions")
                     if s.field("parent") == topic.symbol]
    to_queue = [s for s in subscriptions if "endpointType: 'StorageQueue'" in s.body
                and resolve(_line(s, "queueName"), files[s.file]) == EVENTS_QUEUE]
    if EVENTS_QUEUE not in queues or not to_queue:
        yield f"events queue: no subscription of the topic delivers to a storage queue {EVENTS_QUEUE}"
    for sub in to_queue:
        if quoted(re.search(r"includedEventTypes:\s*\[([^\]]*)\]", sub.body).group(1)) != set(EVENT_TYPES):
            yield f"events queue: the subscription must include every event type {sorted(EVENT_TYPES)}"
        account = resolve(_line(sub, "resourceId"), files[sub.file]).removesuffix(".id")
        writers = [a for a in of_type(found, "Microsoft.Authorization/roleAssignments")
                   if "roles['Storage Queue Data Message Sender']" in (_line(a, "roleDefinitionId") or "")
                   and a.field("scope") == account and (_line(a, "principalId") or "").strip() in APP_PRINCIPAL]
        if "userAssignedIdentity: identity.id" not in sub.body or not writers:
            yield (f"events queue: the topic delivers as the app's identity, which needs Storage Queue Data Message "
                   f"Sender on {account}")


def check_workspace(found: list[Resource]) -> Iterator[str]:
    """A workspace the Bicep creates has the dependent resources ARM requires: storage, key vault, Application
    Insights (each a resource declared here)."""
    symbols = {r.symbol: r.type.lower() for r in found}
    needed = {"storageAccount": "microsoft.storage/storageaccounts", "keyVault": "microsoft.keyvault/vaults",
              "applicationInsights": "microsoft.insights/components"}
    for workspace in of_type(found, "Microsoft.MachineLearningServices/workspaces"):
        if "existing" in workspace.body.split("\n", 1)[0] or _line(workspace, "friendlyName") is None:
            continue  # a reference to a workspace, not one created here
        for key, type_ in needed.items():
            value = (_line(workspace, key) or "").strip()
            if symbols.get(value.removesuffix(".id")) != type_:
                yield f"workspace {workspace.symbol}: {key} must be the id of a {type_} declared here"


def check_routes(needs: Needs, found: list[Resource]) -> Iterator[str]:
    """HTTP routes: a keyed route needs its function key; an anonymous one is the dashboard, which the app serves only
    to people signed in through App Service authentication, so infra must declare Entra ID sign-in that lets
    anonymous requests through to the app (else the keyed route and the platform's webhooks would meet a sign-in)."""
    sign_in = next((r for r in of_type(found, "Microsoft.Web/sites/config") if r.field("name") == "'authsettingsV2'"),
                   None)
    for function, (route, level) in sorted(needs.routes.items()):
        if level == "function":
            continue
        if level != "anonymous" or "signed_in_page(" not in (ROOT / "functions" / f"{function}.py").read_text():
            yield f"route {route}: {level} access without the dashboard's sign-in check"
        elif sign_in is None:
            yield f"route {route}: anonymous, so infra must declare App Service authentication (authsettingsV2)"
        elif not re.search(r"azureActiveDirectory:\s*\{\s*enabled:\s*true", sign_in.body):
            yield f"route {route}: the sign-in must be Entra ID (azureActiveDirectory enabled)"
        elif "unauthenticatedClientAction: 'AllowAnonymous'" not in sign_in.body or \
                "requireAuthentication: false" not in sign_in.body:
            yield (f"route {route}: sign-in must let anonymous requests through (the keyed routes and the platform's "
                   "webhooks carry no sign-in; the dashboard checks its own)")


def check_marketplace(needs: Needs, found: list[Resource], files: dict[str, str]) -> Iterator[str]:
    """A partner's student: custom roles holding exactly the Marketplace actions, the terms assigned to the app at the
    Azure subscription (in main.bicep, whose scope it is) and the SaaS resources in the workspace's resource group."""
    if not needs.partner_students:
        return
    definitions = {r.symbol: quoted(m.group(1)) if (m := re.search(r"\bactions:\s*\[([^\]]*)\]", r.body)) else set()
                   for r in of_type(found, "Microsoft.Authorization/roleDefinitions")}
    terms = [symbol for symbol, actions in definitions.items() if actions == MARKETPLACE_TERMS]
    saas = [symbol for symbol, actions in definitions.items() if actions == MARKETPLACE_RESOURCES]
    if not terms:
        yield f"marketplace: no custom role holds exactly the offer-terms actions {sorted(MARKETPLACE_TERMS)}"
    if not saas:
        yield f"marketplace: no custom role holds exactly the SaaS resource actions {sorted(MARKETPLACE_RESOURCES)}"
    assigned = [a for a in of_type(found, "Microsoft.Authorization/roleAssignments")
                if a.file == "main.bicep" and a.field("scope") is None
                and (_line(a, "principalId") or "").strip() == MAIN_PRINCIPAL
                and (_line(a, "roleDefinitionId") or "").strip() in {f"{s}.id" for s in terms}]
    if terms and not assigned:
        yield "marketplace: the offer-terms role must be assigned to the app's identity at the subscription"
    modules = [m for m in blocks(MODULE, {"main.bicep": files.get("main.bicep", "")})
               if m.field("scope") == "resourceGroup(workspaceGroupName)"
               and (_line(m, "roleDefinitionId") or "").strip() in {f"{s}.id" for s in saas}
               and (_line(m, "principalId") or "").strip() == MAIN_PRINCIPAL]
    inside = [a for m in modules for a in of_type(resources({m.type: files.get(m.type, "")}),
                                                   "Microsoft.Authorization/roleAssignments")
              if a.field("scope") is None and (_line(a, "roleDefinitionId") or "").strip() == "roleDefinitionId"
              and (_line(a, "principalId") or "").strip() == "principalId"]
    if saas and not inside:
        yield ("marketplace: the SaaS resource role must be assigned to the app's identity in the workspace's resource "
               "group (a module scoped to resourceGroup(workspaceGroupName))")


def drift(needs: Needs, files: dict[str, str], role_ids: dict[str, str]) -> list[str]:
    """Every way the Bicep in `files` fails what the code needs; empty when none."""
    found = resources(files)
    settings = app_settings(found)
    site = next(iter(of_type(found, "Microsoft.Web/sites")), None)
    if not settings:
        return ["app settings: no Microsoft.Web/sites/config resource named appsettings"]
    return [*check_queues(needs, found, files), *check_storage(needs, found, settings, files),
            *check_settings(needs, settings, site), *check_events(needs, found, files),
            *check_roles(needs, found, settings, role_ids), *check_published_events(found, settings, files),
            *check_workspace(found), *check_routes(needs, found), *check_marketplace(needs, found, files)]


def infra_files() -> dict[str, str]:
    return {str(p.relative_to(INFRA)): p.read_text() for p in sorted(INFRA.rglob("*.bicep"))}


# ---- Tests ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def needs() -> Needs:
    return code_needs()


def test_the_code_needs_what_the_pipeline_is_built_on(needs: Needs) -> None:
    """The reading of the code itself finds the known bindings and settings (so an empty reading cannot pass)."""
    assert {"shards", "completions", "jobs", "evaluations"} <= needs.queues
    assert {"input", "jobs"} <= needs.containers
    assert needs.connections == {"DistillStorage": "blob", "DistillServiceBus": "serviceBus"}
    assert needs.blob_events == {"ingest": "input"}
    assert needs.grid_functions == {"run_events"}
    assert {"AZUREML_WORKSPACE", "DISTILL_WORKSPACE_TOPIC", "DistillServiceBus__fullyQualifiedNamespace"} <= \
        needs.settings
    assert needs.key_settings == {"TEACHER_API_KEY"}
    assert needs.routes == {"status": ("jobs/{job}", "function"), "dashboard": ("dashboard/{*path}", "anonymous")}
    assert needs.partner_students


def test_infra_declares_everything_the_code_needs(needs: Needs) -> None:
    assert drift(needs, infra_files(), json.loads((INFRA / "roles.json").read_text())) == []


def test_azd_deploys_this_folder_as_the_function_app_and_subscribes_events_after_it() -> None:
    azure_yaml = (ROOT / "azure.yaml").read_text()
    assert re.search(r"host:\s*function", azure_yaml) and re.search(r"project:\s*\.\s*$", azure_yaml, re.M)
    assert "postdeploy" in azure_yaml and (INFRA / "hooks" / "postdeploy.sh").exists()
    hook = (INFRA / "hooks" / "postdeploy.sh").read_text()
    events = (INFRA / "events.bicep").read_text()
    main = (INFRA / "main.bicep").read_text()
    windows = (INFRA / "hooks" / "postdeploy.ps1").read_text()  # Windows runs the same steps in PowerShell
    assert re.search(r"windows:\s*\n\s*shell:\s*pwsh\s*\n\s*run:\s*\./infra/hooks/postdeploy\.ps1", azure_yaml)
    for param in re.findall(r"^param\s+(\w+)", events, re.M):  # every parameter of events.bicep is passed ...
        assert f"{param}=" in hook, param
        assert f"{param}=" in windows, param
    for variable in re.findall(r'"\$env:([A-Z_]+)"', windows):
        assert f'"${variable}"' in hook, variable  # ... from the same outputs
    for variable in re.findall(r'"\$([A-Z_]+)"', hook):  # ... from an output of main.bicep, which azd exports
        assert variable in re.findall(r"^output\s+(\w+)", main, re.M), variable
    site = (INFRA / "modules" / "app.bicep").read_text()
    assert "'azd-service-name': 'app'" in site and re.search(r"^  app:$", azure_yaml, re.M)
    assert "runtime: { name: 'python', version: '3.11' }" in site


MUTATIONS = [
    ("modules/app.bicep", "    requiresDuplicateDetection: true\n", "",
     "queue shards: requiresDuplicateDetection must be true"),
    ("modules/app.bicep", "var completionQueue = 'completions'", "var completionQueue = 'completion'",
     "queue completions: no Microsoft.ServiceBus/namespaces/queues resource declares it"),
    ("modules/app.bicep", "var evaluationQueue = 'evaluations'", "var evaluationQueue = 'evaluation'",
     "queue evaluations: no Microsoft.ServiceBus/namespaces/queues resource declares it"),
    ("modules/app.bicep", "    DISTILL_WORKSPACE_TOPIC: workspaceId", "",
     "app setting DISTILL_WORKSPACE_TOPIC: read by the code, not declared in infra"),
    ("modules/app.bicep", "DistillServiceBus__fullyQualifiedNamespace:", "DistillBus__fullyQualifiedNamespace:",
     "connection DistillServiceBus: app setting DistillServiceBus__fullyQualifiedNamespace is missing"),
    ("modules/app.bicep", "  parent: dataBlobs\n  name: jobsContainer", "  parent: hostBlobs\n  name: jobsContainer",
     "container jobs: belongs to hostStorage, not to the account DistillStorage connects to (dataStorage)"),
    ("modules/app.bicep", "'Microsoft.Authorization/roleDefinitions', roles['Azure Service Bus Data Receiver'])",
     "'Microsoft.Authorization/roleDefinitions', roles['Azure Service Bus Data Owner'])",
     "role Azure Service Bus Data Receiver: no assignment"),
    ("modules/app.bicep", "  scope: dataStorage\n  properties: {\n    roleDefinitionId: subscriptionResourceId("
     "'Microsoft.Authorization/roleDefinitions', roles['Storage Blob Data Contributor'])\n    principalId: identity",
     "  scope: hostStorage\n  properties: {\n    roleDefinitionId: subscriptionResourceId("
     "'Microsoft.Authorization/roleDefinitions', roles['Storage Blob Data Contributor'])\n    principalId: identity",
     "role Storage Blob Data Contributor: no assignment on the Microsoft.Storage/storageAccounts dataStorage"),
    ("events.bicep", "'PutBlockList', ", "", "function ingest: the data.api filter must admit"),
    ("events.bicep", "var inputContainer = 'input'", "var inputContainer = 'jobs'",
     "function ingest: subjectBeginsWith must select the input container"),
    ("events.bicep", "var ingestFunction = 'ingest'", "var ingestFunction = 'ingest_blob'",
     "function ingest: no Event Grid subscription calls its blob extension webhook"),
    ("modules/workspace-events.bicep", "'Paused'", "'Running'", "run events: the runStatus filter"),
    ("modules/app.bicep", "    AZURE_CLIENT_ID: identity",
     "    FUNCTIONS_WORKER_RUNTIME: 'python'\n    AZURE_CLIENT_ID: identity",
     "app setting FUNCTIONS_WORKER_RUNTIME: Flex Consumption refuses it"),
    ("events.bicep", "var runEventsFunction = 'run_events'", "var runEventsFunction = 'job_events'",
     "function run_events: no Event Grid subscription delivers to it"),
    ("modules/app.bicep", "    DISTILL_EVENTS_TOPIC_ENDPOINT: distillEvents.properties.endpoint\n", "",
     "app setting DISTILL_EVENTS_TOPIC_ENDPOINT: read by the code, not declared in infra"),
    ("modules/app.bicep", "    inputSchema: 'CloudEventSchemaV1_0'", "    inputSchema: 'EventGridSchema'",
     "topic distillEvents: inputSchema must be 'CloudEventSchemaV1_0'"),
    ("modules/app.bicep", "  scope: distillEvents", "  scope: dataStorage",
     "role EventGrid Data Sender: no assignment"),
    ("modules/app.bicep", "        'Distill.Job.BudgetSpent'\n", "",
     "events queue: the subscription must include every event type"),
    ("modules/app.bicep", "split(split(serviceBus.properties.serviceBusEndpoint, '//')[1], ':')[0]",
     "'${serviceBus.name}.servicebus.windows.net'",
     "app setting DistillServiceBus__fullyQualifiedNamespace: take the host from the resource"),
    ("modules/app.bicep", "roles['Storage Queue Data Message Sender'])\n    principalId",
     "roles['Reader'])\n    principalId",
     "events queue: the topic delivers as the app's identity, which needs Storage Queue Data Message Sender"),
    ("modules/workspace.bicep", "    applicationInsights: mlInsights.id\n", "",
     "workspace newWorkspace: applicationInsights must be the id of a microsoft.insights/components"),
    ("modules/app.bicep", "var eventsQueueName = 'distill-events'", "var eventsQueueName = 'events'",
     "events queue: no subscription of the topic delivers to a storage queue distill-events"),
    ("modules/app.bicep", "  name: 'authsettingsV2'", "  name: 'authsettings'",
     "route dashboard/{*path}: anonymous, so infra must declare App Service authentication"),
    ("modules/app.bicep", "unauthenticatedClientAction: 'AllowAnonymous'",
     "unauthenticatedClientAction: 'RedirectToLoginPage'", "route dashboard/{*path}: sign-in must let anonymous"),
    ("modules/app.bicep", "      azureActiveDirectory: {\n        enabled: true",
     "      azureActiveDirectory: {\n        enabled: false", "route dashboard/{*path}: the sign-in must be Entra ID"),
    ("main.bicep", "          'Microsoft.SaaS/register/action'\n", "",
     "marketplace: no custom role holds exactly the offer-terms actions"),
    ("main.bicep", "          'Microsoft.SaaS/resources/write'\n", "          'Microsoft.SaaS/*'\n",
     "marketplace: no custom role holds exactly the SaaS resource actions"),
    ("main.bicep", "    roleDefinitionId: marketplaceTerms.id\n", "    roleDefinitionId: marketplaceResources.id\n",
     "marketplace: the offer-terms role must be assigned"),
    ("main.bicep", "  name: 'marketplace-access'\n  scope: resourceGroup(workspaceGroupName)",
     "  name: 'marketplace-access'\n  scope: group", "marketplace: the SaaS resource role must be assigned"),
    ("modules/marketplace-access.bicep", "    principalId: principalId\n", "    principalId: 'someone'\n",
     "marketplace: the SaaS resource role must be assigned"),
]


@pytest.mark.parametrize(("file", "old", "new", "problem"), MUTATIONS, ids=[m[3][:40] for m in MUTATIONS])
def test_a_drifted_infra_is_reported(needs: Needs, file: str, old: str, new: str, problem: str) -> None:
    files = infra_files()
    assert old in files[file], "the mutation no longer applies: update it with the Bicep"
    files[file] = files[file].replace(old, new, 1)
    problems = drift(needs, files, json.loads((INFRA / "roles.json").read_text()))
    assert any(p.startswith(problem) for p in problems), problems


def test_every_parameter_azd_fills_is_declared_and_every_one_without_a_default_is_filled() -> None:
    main = (INFRA / "main.bicep").read_text()
    declared = dict(re.findall(r"^param\s+(\w+)\s+\w+(\s*=)?", main, re.M))
    filled = set(json.loads((INFRA / "main.parameters.json").read_text())["parameters"])
    assert filled - set(declared) == set()
    assert {name for name, default in declared.items() if not default} - filled == set()


def test_a_wrong_role_id_is_reported(needs: Needs) -> None:
    role_ids = {**json.loads((INFRA / "roles.json").read_text()),
                "AzureML Data Scientist": "00000000-0000-0000-0000-000000000000"}
    assert any(p.startswith("role AzureML Data Scientist: infra/roles.json has") for p in
               drift(needs, infra_files(), role_ids))


def test_a_new_setting_read_by_the_app_must_be_declared(needs: Needs) -> None:
    more = Needs(**{**needs.__dict__, "settings": needs.settings | {"DISTILL_NEW_KNOB"}})
    assert "app setting DISTILL_NEW_KNOB: read by the code, not declared in infra" in \
        drift(more, infra_files(), json.loads((INFRA / "roles.json").read_text()))


def test_a_new_anonymous_route_must_check_sign_in(needs: Needs) -> None:
    more = Needs(**{**needs.__dict__, "routes": {**needs.routes, "status": ("jobs/{job}", "anonymous")}})
    assert "route jobs/{job}: anonymous access without the dashboard's sign-in check" in \
        drift(more, infra_files(), json.loads((INFRA / "roles.json").read_text()))


def test_every_route_is_documented(needs: Needs) -> None:
    """The app's HTTP routes, and the dashboard's pages below its root, each in the docs as users call them."""
    from shared.dashboard.routes import ROUTES

    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    assert [route for route, _ in needs.routes.values() if f"/api/{route}" not in docs] == []
    dashboard = (ROOT / "docs" / "dashboard.md").read_text()
    assert [route for route in ROUTES if f"`{route or '/'}`" not in dashboard] == []


def test_a_message_lock_is_renewed_as_long_as_a_function_may_run() -> None:
    """A function that outlives its message's lock renewal loses the message to another instance, which pays the
    teacher for the same rows again."""
    host = json.loads((ROOT / "host.json").read_text())
    hours, minutes, seconds = (int(part) for part in host["functionTimeout"].split(":"))
    renewal = host["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"]
    r_hours, r_minutes, r_seconds = (int(part) for part in renewal.split(":"))
    assert r_hours * 3600 + r_minutes * 60 + r_seconds >= hours * 3600 + minutes * 60 + seconds
