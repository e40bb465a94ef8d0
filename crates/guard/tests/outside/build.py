"""Builds samples.json, the outside evaluation set, from other projects' public test data.

Nothing here knows our detectors' rules: every text comes verbatim from a source file (or,
for libphonenumber's example numbers, is the E.164 form `+<countryCode> <exampleNumber>`
of two fields of one metadata entry), and every label is the source's own verdict. See
README.md beside this file for the sources, their licences and the selection rules.

Usage: python3 build.py MIRRORS_DIR > samples.json
MIRRORS_DIR holds one bare git repository per source at `<owner>+<name>/repo`; each file
is read at the commit pinned in SOURCES, so reruns give the same set.
"""
import ast
import json
import re
import subprocess
import sys
import textwrap

import yaml

SOURCES = {
    "gitleaks/gitleaks": "b58d3f102cf3a2c84cb7f923d05c25c9b1aed84b",
    "Yelp/detect-secrets": "5e141933554a0b74e7341841f318be21e895339c",
    "microsoft/presidio": "0aa9f8e44275cb52c00fbbebe19168e934e1f076",
    "google/libphonenumber": "f7e3e88c92b905c8d6edb81f336dbe25edc05b52",
    "JoshData/python-email-validator": "b73d010bb3db70547199f39fd85d2286a7f6f476",
    "praetorian-inc/noseyparker": "2e6e7f36ce36619852532bbe698d8cb7a26d2da7",
    "secretlint/secretlint": "18346ba31b8173d52060b971221ab38c1943def0",
    "mongodb/kingfisher": "ee7c0db3ef87575768f817820c24736249ffcdef",
}

MIRRORS = sys.argv[1] if len(sys.argv) > 1 else "/work/.mirror"
samples = []


def git(repo, *args):
    git_dir = f"{MIRRORS}/{repo.replace('/', '+')}/repo"
    return subprocess.run(["git", "--git-dir", git_dir, *args], check=True,
                          capture_output=True).stdout.decode("utf-8")


def read(repo, path):
    git_dir = f"{MIRRORS}/{repo.replace('/', '+')}/repo"
    out = subprocess.run(["git", "--git-dir", git_dir, "show", f"{SOURCES[repo]}:{path}"],
                         check=True, capture_output=True)
    return out.stdout.decode("utf-8")


seen_texts = set()


def add(detector, positive, text, values, repo, path, note=None):
    """One sample: `values` are the substrings the source says are `detector` items. A
    text already in the set for the same detector (rules shared between sources) is kept
    once, with its first source."""
    if (detector, text) in seen_texts:
        return
    seen_texts.add((detector, text))
    if positive:
        values = [v for v in values if v]
        assert values and all(v in text for v in values), (repo, path, text, values)
    s = {"detector": detector, "label": detector if positive else "none", "text": text,
         "values": values if positive else [],
         "source": {"repo": repo, "path": path, "commit": SOURCES[repo]}}
    if note:
        s["note"] = note
    samples.append(s)


# ------------------------------------------------------------------ Go literals (gitleaks)

GO_STR = re.compile(r'`[^`]*`|"(?:[^"\\\n]|\\.)*"')


def go_unquote(tok):
    if tok.startswith("`"):
        return tok[1:-1]
    return json.loads(tok) if "\\x" not in tok else ast.literal_eval(tok)


def split_top(body):
    """Splits a Go composite-literal body at top-level commas, skipping strings/comments."""
    items, depth, cur, i = [], 0, [], 0
    while i < len(body):
        c = body[i]
        if c in "`\"":
            m = GO_STR.match(body, i)
            cur.append(m.group(0))
            i = m.end()
            continue
        if body.startswith("//", i):
            j = body.find("\n", i)
            i = len(body) if j < 0 else j
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            items.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        items.append("".join(cur).strip())
    return items


def matching(body, open_at):
    """Index just past the bracket that closes the one at `open_at`."""
    depth, i = 0, open_at
    while i < len(body):
        c = body[i]
        if c in "`\"":
            i = GO_STR.match(body, i).end()
            continue
        if body.startswith("//", i):
            i = body.find("\n", i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unbalanced")


def literal_expr(expr):
    """A Go expression made only of string literals joined by `+`, else None."""
    parts = [p.strip() for p in re.split(r"\+(?=(?:[^`\"]|`[^`]*`|\"(?:[^\"\\]|\\.)*\")*$)", expr)]
    if not parts or not all(GO_STR.fullmatch(p) for p in parts):
        return None
    return "".join(go_unquote(p) for p in parts)


def gitleaks_regexes(src):
    """rule_id -> the rule's regex (those Python's `re` reads), for sibling checks."""
    out = {}
    for fn in re.finditer(r"^func \w+\(\) \*config\.Rule \{", src, re.M):
        body = src[fn.start():matching(src, fn.end() - 1)]
        rid = re.search(r'RuleID:\s*"([^"]+)"', body)
        rx = re.search(r"Regex:\s*(?:regexp\.MustCompile|utils\.GenerateUniqueTokenRegex)\(\s*`([^`]*)`", body)
        if rid and rx:
            try:
                out[rid.group(1)] = re.compile(rx.group(1))
            except re.error:
                pass
    return out


GL_GENERATE = "cmd/generate/config/utils/generate.go"


def sample_templates(ident, secret):
    """The texts of gitleaks' `utils.GenerateSampleSecrets(ident, secret)`: every entry of
    its `samples` map (commented-out TODO entries excluded) with `{i}`, `{I}` and `{s}`
    replaced, in the order of the entries' names (Go map order is random)."""
    src = read(GITLEAKS, GL_GENERATE)
    fn = src.index("func GenerateSampleSecrets(")
    blk_at = src.index("map[string]string{", fn) + len("map[string]string")
    blk = src[blk_at:matching(src, blk_at)]
    entries = {}
    for item in split_top(blk[1:-1]):
        k, _, v = item.partition(":")
        k, v = k.strip(), v.strip()
        if GO_STR.fullmatch(k) and GO_STR.fullmatch(v):
            entries[go_unquote(k)] = go_unquote(v)
    out = []
    for name in sorted(entries):
        t = entries[name]
        out.append(t.replace("{i}", ident).replace("{I}", ident.upper()).replace("{s}", secret))
    return out


def gitleaks_cases(src, keyword_rule=False):
    """(rule_id, is_tp, text, secret) for every literal tp/fp of every rule function in
    `src`; `secret` is the generated sample's secret (else None: read from the text).
    `keyword_rule`: the rule's regex needs an identifier before the secret (gitleaks'
    `GenerateSemiGenericRegex`), so generated samples keep their templates."""
    for fn in re.finditer(r"^func \w+\(\) \*config\.Rule \{", src, re.M):
        end = matching(src, fn.end() - 1)
        body = src[fn.start():end]
        rid = re.search(r'RuleID:\s*"([^"]+)"', body)
        if not rid:
            continue
        for m in re.finditer(r"\b(tps|fps)\s*(?::=|=)\s*", body):
            kind = m.group(1)
            rest = body[m.end():]
            if rest.startswith("[]string{"):
                blk = rest[len("[]string"):matching(rest, len("[]string"))]
                elems = split_top(blk[1:-1])
            elif rest.startswith("append("):
                blk = rest[len("append"):matching(rest, len("append"))]
                elems = split_top(blk[1:-1])[1:]
            elif rest.startswith("utils.GenerateSampleSecrets("):
                elems = [rest[:matching(rest, len("utils.GenerateSampleSecrets"))]]
            else:
                continue
            for e in elems:
                e = e.strip()
                if e.endswith("..."):
                    e = e[:-3].strip()
                if e.startswith("[]string{"):
                    inner = split_top(e[len("[]string{"):-1])
                    for x in inner:
                        text = literal_expr(x)
                        if text:
                            yield rid.group(1), kind == "tps", text, None
                    continue
                g = re.match(r"utils\.GenerateSampleSecrets?\((.*)\)$", e, re.S)
                if g:
                    args = split_top(g.group(1))
                    ident = literal_expr(args[0]) if len(args) == 2 else None
                    secret = literal_expr(args[1]) if len(args) == 2 else None
                    if not (ident and secret):
                        continue  # a secret generated at run time
                    if not keyword_rule:
                        # A token rule reads the token alone: the bare secret is the case.
                        yield rid.group(1), kind == "tps", secret, None
                        continue
                    # A keyword rule reads the identifier too: the texts gitleaks tests
                    # are its templates filled with identifier and secret.
                    plural = g.group(0).startswith("utils.GenerateSampleSecrets(")
                    for text in (sample_templates(ident, secret) if plural
                                 else [f'{ident}_api_token = "{secret}"']):
                        yield rid.group(1), kind == "tps", text, secret
                    continue
                text = literal_expr(e)
                if text:
                    yield rid.group(1), kind == "tps", text, None


def assigned_value(text):
    """The credential in a gitleaks true-positive line: the last quoted string, else what
    follows the last `=`/`:` (or the whole text when it is a bare token)."""
    quoted = re.findall(r'"([^"\n]{8,})"|\'([^\'\n]{8,})\'', text)
    if quoted:
        q = quoted[-1]
        return q[0] or q[1]
    m = re.search(r"[=:]\s*([^\s=:]{8,}\S*)\s*$", text)
    return m.group(1) if m else text.strip()


GITLEAKS = "gitleaks/gitleaks"
GL_RULES = "cmd/generate/config/rules/"
GL_MAP = [
    ("aws.go", "aws_access_key", r"aws-access-token"),
    ("github.go", "github_token", r"github-(pat|fine-grained-pat|oauth|app-token|refresh-token)"),
    ("openai.go", "openai_key", r"openai-api-key"),
    ("anthropic.go", "anthropic_key", r"anthropic-(api|admin-api)-key"),
    ("slack.go", "slack_token", r"slack-.*"),
    ("gcp.go", "google_api_key", r"gcp-api-key"),
    ("jwt.go", "jwt", r"jwt"),
    ("privatekey.go", "private_key", r"private-key"),
    ("generic.go", "generic_secret", r"generic-api-key"),
]
# gitleaks' gcp-api-key allowlist: real keys published in Google's own samples and SDKs.
# They are negatives only by membership in that list (nothing in the text distinguishes
# them from a live key), so they test a list, not a detector, and are left out.
GCP_ALLOWLISTED = set(re.findall(r"regexp\.MustCompile\(`(AIza[^`]+)`\)",
                                 read(GITLEAKS, GL_RULES + "gcp.go")))

for file, det, rule_re in GL_MAP:
    path = GL_RULES + file
    seen = set()
    # True positives first: a text that one rule lists as its positive and a sibling rule
    # as a negative (gitleaks' anthropic api/admin rules) is a positive for our detector,
    # which covers both.
    src = read(GITLEAKS, path)
    cases = sorted(gitleaks_cases(src, keyword_rule=det == "generic_secret"), key=lambda c: not c[1])
    regexes = {r: x for r, x in gitleaks_regexes(src).items() if re.fullmatch(rule_re, r)}
    for rid, tp, text, secret in cases:
        if not re.fullmatch(rule_re, rid) or (tp, text) in seen:
            continue
        # A rule's false positive that a sibling rule (also ours) matches is that rule's
        # kind of token (gitleaks' Anthropic admin key listed under the API-key rule).
        if not tp and any(x.search(text) for r, x in regexes.items() if r != rid):
            continue
        seen.add((tp, text))
        if det == "google_api_key" and not tp and text in GCP_ALLOWLISTED:
            continue
        value = secret or (text if det in ("private_key",) else assigned_value(text))
        if det == "jwt" and tp:
            value = re.search(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.?[A-Za-z0-9_\-]*", text).group(0)
        add(det, tp, text, [value] if tp else [], GITLEAKS, path, note=rid)


# ------------------------------------------------------- Python parametrize lists (ast)

def param_lists(src, ns_extra=None):
    """Yields (argnames, [element values]) for each `pytest.mark.parametrize` in `src`,
    evaluating elements in a namespace of the module's simple top-level assignments; an
    element that cannot be evaluated (random data, fixtures) is skipped."""
    tree = ast.parse(src)
    ns = {"textwrap": textwrap, "base64": __import__("base64")}
    ns.update(ns_extra or {})
    for node in tree.body:
        if isinstance(node, ast.Assign):
            try:
                exec(compile(ast.Module([node], []), "<src>", "exec"), ns)
            except Exception:
                pass
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if not (isinstance(f, ast.Attribute) and f.attr == "parametrize"):
            continue
        names = ast.literal_eval(node.args[0])
        if isinstance(names, (tuple, list)):
            names = ",".join(names)
        names = [n.strip() for n in names.split(",")]
        lst = node.args[1]
        elts = lst.elts if isinstance(lst, (ast.List, ast.Tuple)) else []
        vals = []
        for e in elts:
            try:
                vals.append(eval(compile(ast.Expression(e), "<src>", "eval"), ns))
            except Exception:
                pass
        yield names, vals


DS = "Yelp/detect-secrets"
DS_FLAG = [  # (file, detector, argument holding the text)
    ("tests/plugins/aws_key_test.py", "aws_access_key"),
    ("tests/plugins/github_token_test.py", "github_token"),
    ("tests/plugins/openai_test.py", "openai_key"),
    ("tests/plugins/jwt_test.py", "jwt"),
]
for path, det in DS_FLAG:
    for names, vals in param_lists(read(DS, path)):
        if len(names) != 2 or names[1] != "should_flag":
            continue
        for text, flag in vals:
            if det == "aws_access_key" and not re.search(r"A(KIA|SIA|BIA|CCA|3T)", text):
                continue  # the `aws_secret_access_key = ...` lines test the secret, not the id
            add(det, flag, text, [text.split('"')[1] if '"' in text else text] if flag else [],
                DS, path)
for names, vals in param_lists(read(DS, "tests/plugins/slack_test.py")):
    if names == ["line"]:
        for text in vals:
            add("slack_token", True, text, [text], DS, "tests/plugins/slack_test.py")
for names, vals in param_lists(read(DS, "tests/plugins/private_key_test.py")):
    if names == ["file_content"]:
        for text in vals:
            add("private_key", True, text, [text[text.index("-----BEGIN"):]], DS,
                "tests/plugins/private_key_test.py")
KW = "tests/plugins/keyword_test.py"
kw_src = read(DS, KW)
kw_ns = {}
for node in ast.parse(kw_src).body:
    if isinstance(node, ast.Assign):
        try:
            exec(compile(ast.Module([node], []), "<src>", "exec"), {"base64": __import__("base64"), **kw_ns}, kw_ns)
        except Exception:
            pass
# The keyword plugin's own regexes (plain `re.compile` definitions up to its
# configuration-file table), to tell which Go verdicts depend on the file type.
kw_plugin = read(DS, "detect_secrets/plugins/keyword.py")
kw_re_ns = {"re": re}
exec(kw_plugin[kw_plugin.index("DENYLIST = ("):kw_plugin.index("GOLANG_DENYLIST_REGEX_TO_GROUP")],
     kw_re_ns)
CONFIG_RULES = list(kw_re_ns["CONFIG_DENYLIST_REGEX_TO_GROUP"])
# The keyword plugin's verdicts depend on the file type; the configuration-file and Go
# lists are the ones whose syntax (quoted or not) is language-neutral, except for Go
# negatives that the plugin's configuration-file rules flag (`password: "real_key"`:
# `key: value` is no Go assignment, but it is YAML's): their verdict is the file type's,
# so they are left out.
for lst in ("CONFIG_TEST_CASES", "GOLANG_TEST_CASES"):
    for node in ast.parse(kw_src).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == lst:
            for e in node.value.elts:
                try:
                    line, secret = eval(compile(ast.Expression(e), "<src>", "eval"), dict(kw_ns))
                except Exception:
                    continue  # LONG_LINE: random content
                if (lst == "GOLANG_TEST_CASES" and secret is None
                        and any(r.search(line) for r in CONFIG_RULES)):
                    continue
                add("generic_secret", secret is not None, line, [secret] if secret else [], DS, KW,
                    note=lst)

PR = "microsoft/presidio"
PT = "presidio-analyzer/tests/"


def presidio(path, det, names_want):
    for names, vals in param_lists(read(PR, PT + path)):
        if names[:len(names_want)] != names_want:
            continue
        for v in vals:
            text, n, spans = v[0], v[1], v[names.index(names_want[-1])]
            add(det, n > 0, text, [text[s:e] for s, e in spans] if n else [], PR, PT + path)


presidio("test_email_recognizer.py", "email", ["text", "expected_len", "expected_positions"])
presidio("test_credit_card_recognizer.py", "credit_card", ["text", "expected_len", "expected_scores", "expected_res"])
presidio("test_iban_recognizer.py", "iban", ["iban", "expected_len", "expected_res"])
# Phone lists: those run at Presidio's default leniency (the leniency list is left out).
for names, vals in param_lists(read(PR, PT + "test_phone_recognizer.py")):
    if "leniency" in names:
        continue
    for v in vals:
        add("phone", v[1] > 0, v[0], [v[0][a:b] for a, b in v[3]], PR, PT + "test_phone_recognizer.py")
# US social security numbers: negatives for the phone detector.
for names, vals in param_lists(read(PR, PT + "test_us_ssn_recognizer.py")):
    if names[:2] == ["text", "expected_len"]:
        for v in vals:
            add("phone", False, v[0], [], PR, PT + "test_us_ssn_recognizer.py",
                note="US SSN (presidio us_ssn test)")

# Other kinds of numbers (presidio's positives for other entities) are negatives for the
# phone and card detectors: the source labels each as something else.
for path in ("test_us_ssn_recognizer.py", "test_uk_nhs_recognizer.py", "test_aba_routing_recognizer.py",
             "test_us_itin_recognizer.py", "test_in_aadhaar_recognizer.py", "test_us_bank_recognizer.py",
             "test_ip_recognizer.py", "test_date_recognizer.py"):
    for names, vals in param_lists(read(PR, PT + path)):
        if names[:2] == ["text", "expected_len"]:
            for v in vals:
                if v[1] > 0:
                    what = path[len("test_"):-len("_recognizer.py")]
                    for det in ("phone", "credit_card"):
                        if det == "phone" and what == "us_ssn":
                            continue  # added above
                        add(det, False, v[0], [], PR, PT + path, note=f"{what} (presidio)")

# ------------------------------------------------------------ python-email-validator
EV = "JoshData/python-email-validator"
EVP = "tests/test_syntax.py"
# Invalid addresses whose error concerns text around an otherwise valid address (display
# names, angle brackets, a trailing period or newline): in free text a scanner rightly
# reports the address inside, so they are not negatives for a scanner and are left out.
# An invalid character `'<'` is an angle bracket too: `≮me@example.com`, whose `≮`
# (U+226E) decomposes canonically to `<` and a combining mark, is `<` glued before
# `me@example.com`.
AROUND = ("display name", "angle bracket", "cannot end with a period", "U+000A",
          "anything after", "SPACE", "full-width", "small commercial at", "too long",
          "before the @-sign: '<'")
for names, vals in param_lists(read(EV, EVP), {"MakeValidatedEmail": lambda **k: k}):
    if names[:2] == ["email_input", "output"]:
        for addr, out in vals:
            add("email", True, addr, [addr], EV, EVP, note="valid")
    elif names[:2] == ["email_input", "error_msg"] or names[:2] == ["email_input", "expected_error"]:
        for addr, err in vals:
            if "@" not in addr or any(a.lower() in err.lower() for a in AROUND):
                continue
            add("email", False, addr, [], EV, EVP, note=err)

# ------------------------------------------------------------------- libphonenumber
LP = "google/libphonenumber"
META = "resources/PhoneNumberMetadata.xml"
meta = read(LP, META)
for t in re.finditer(r'<territory id="(\w+)"[^>]*?countryCode="(\d+)".*?</territory>', meta, re.S):
    region, cc = t.group(1), t.group(2)
    if region == "001":
        continue  # non-geographic entities
    for kind in ("fixedLine", "mobile"):
        m = re.search(rf"<{kind}>.*?<exampleNumber>(\d+)</exampleNumber>", t.group(0), re.S)
        if m:
            text = f"+{cc} {m.group(1)}"
            add("phone", True, text, [text], LP, META, note=f"{region} {kind} exampleNumber, E.164")
MT = "java/libphonenumber/test/com/google/i18n/phonenumbers/PhoneNumberMatcherTest.java"
mt = read(LP, MT)


def java_cases(name):
    blk = re.search(rf"{name} = \{{(.*?)\n  \}};", mt, re.S).group(1)
    for m in re.finditer(r'new NumberTest\("((?:[^"\\]|\\.)*)", RegionCode\.(\w+)\)', blk):
        yield json.loads('"' + m.group(1) + '"'), m.group(2)


# The matcher tests run on libphonenumber's *test* metadata; only US numbers are the same
# in the real metadata, so the positive lists are taken for region US only. VALID_CASES
# (found only at the loosest validity level: `12 7/8 - 14 12/34 - 5`) are not used.
for lst in ("EXACT_GROUPING_CASES", "STRICT_GROUPING_CASES"):
    for text, region in java_cases(lst):
        if region == "US":
            add("phone", True, text, [text.split(" x")[0].split(" ext")[0]], LP, MT, note=lst)
for text, region in java_cases("IMPOSSIBLE_CASES"):
    add("phone", False, text, [], LP, MT, note=f"IMPOSSIBLE_CASES ({region})")

# ----------------------------------------------------------------------- noseyparker
NP = "praetorian-inc/noseyparker"
NPR = "crates/noseyparker/data/default/builtin/rules/"
NP_MAP = [
    ("aws.yml", "aws_access_key", r"np\.aws\.1"),
    ("github.yml", "github_token", r"np\.github\.[12347]"),
    ("openai.yml", "openai_key", r"np\.openai\..*"),
    ("anthropic.yml", "anthropic_key", r"np\.anthropic\..*"),
    ("slack.yml", "slack_token", r"np\.slack\..*"),
    ("google.yml", "google_api_key", r"np\.google\.5"),
    ("jwt.yml", "jwt", r"np\.jwt\.1"),
    ("pem.yml", "private_key", r"np\.pem\.1"),
    ("generic.yml", "generic_secret", r"np\.generic\..*"),
]


def np_value(pattern, text):
    """The secret in a noseyparker example: the rule's last capture group (the rules are
    written for Rust's regex crate; Python's `re` reads these ones the same way)."""
    try:
        m = re.search(pattern.replace("(?x)(?i)", "(?xi)"), text)
    except re.error:
        m = None
    if not m:
        return text.strip()
    # The secret is the last group (the username/password rules capture both).
    return next((g for g in reversed(m.groups()) if g), m.group(0))


KF = "mongodb/kingfisher"
KFR = "data/rules/"
KF_MAP = [
    ("aws.yml", "aws_access_key", r"kingfisher\.aws\.1"),
    ("github.yml", "github_token", r"kingfisher\.github\.[12347]"),
    ("openai.yml", "openai_key", r"kingfisher\.openai\..*"),
    ("anthropic.yml", "anthropic_key", r"kingfisher\.anthropic\..*"),
    ("slack.yml", "slack_token", r"kingfisher\.slack\..*"),
    ("jwt.yml", "jwt", r"kingfisher\.jwt\.1"),
    ("pem.yml", "private_key", r"kingfisher\.pem\.1"),
    ("generic.yml", "generic_secret", r"kingfisher\.generic\.[0-9]+"),
]
for repo, rdir, file, det, id_re in [(NP, NPR, *m) for m in NP_MAP] + [(KF, KFR, *m) for m in KF_MAP]:
    raw = read(repo, rdir + file)
    blocks = re.split(r"\n(?=\s*- name:)", raw)
    rules = [r for r in yaml.safe_load(raw)["rules"] if re.fullmatch(id_re, r["id"])]

    def compiled(rule):
        try:
            return re.compile(rule["pattern"].replace("(?x)(?i)", "(?xi)"))
        except re.error:
            return None

    patterns = {r["id"]: compiled(r) for r in rules}
    for rule in rules:
        block = next(b for b in blocks if re.search(rf"id: {re.escape(rule['id'])}\s*\n", b))
        for ex in rule.get("examples", []):
            add(det, True, ex, [np_value(rule["pattern"], ex)], repo, rdir + file, note=rule["id"])
        # "FIXME: extend this rule so these examples get matched": such negatives are
        # secrets the rule misses, so the source's own label is not "none".
        if "FIXME" in block:
            continue
        for ex in rule.get("negative_examples", []):
            # Negatives are per rule: one that a sibling rule of ours matches is a token of
            # that sibling's kind (noseyparker's Slack bot rule lists user tokens).
            if any(p and p.search(ex) for i, p in patterns.items() if i != rule["id"]):
                continue
            add(det, False, ex, [], repo, rdir + file, note=rule["id"])

# ------------------------------------------------------------------------ secretlint
SL = "secretlint/secretlint"
SL_MAP = [  # package, detector, messageIds that are this detector
    ("secretlint-rule-aws", "aws_access_key", {"AWSAccessKeyID"}),
    ("secretlint-rule-github", "github_token", None),
    ("secretlint-rule-openai", "openai_key", None),
    ("secretlint-rule-anthropic", "anthropic_key", None),
    ("secretlint-rule-slack", "slack_token", None),
    ("secretlint-rule-privatekey", "private_key", None),
]
for pkg, det, ids in SL_MAP:
    base = f"packages/@secretlint/{pkg}/test/snapshots/"
    files = git(SL, "ls-tree", "-r", "--name-only", SOURCES[SL], base).split("\n")
    for out_path in sorted(f for f in files if f.endswith("/output.json")):
        case = out_path[len(base):-len("/output.json")]
        if "options" in case or "--" in case:
            continue  # cases run with non-default rule options
        out = json.loads(read(SL, out_path))
        text = out.get("sourceContent")
        if text is None:
            continue
        msgs = [m for m in out["messages"] if ids is None or m.get("messageId") in ids]
        other = [m for m in out["messages"] if m not in msgs]
        if other and not msgs:
            continue  # only findings of kinds we do not detect (e.g. AWS account ids)
        in_path = next(f for f in files if f.startswith(base + case + "/input"))
        values = [text[m["range"][0]:m["range"][1]] for m in msgs]
        add(det, bool(msgs), text, values, SL, in_path, note=case)

# Stable ids: detector/pos|neg/NNN in order of appearance.
count = {}
for s in samples:
    k = (s["detector"], "pos" if s["label"] != "none" else "neg")
    count[k] = count.get(k, 0) + 1
    s["id"] = f"{k[0]}/{k[1]}/{count[k]:03}"
out = [{"id": s["id"], **{k: v for k, v in s.items() if k != "id"}} for s in samples]
json.dump({"sources": SOURCES, "samples": out}, sys.stdout, ensure_ascii=False, indent=1)
print()
