"""Generator of tests/corpus.json (kept for provenance; the JSON is the source of truth).

Texts are hand-written; token bodies are random (seeded, so reruns are identical) and
every value is synthetic: test card numbers, registry example IBANs, made-up AWS key
ids (AWS's documentation example ids as negatives), fictional phone numbers.
Usage: python3 tests/gen_corpus.py tests/corpus.json
"""
import json, random, base64, sys

R = random.Random(20240611)
B62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
B64U = B62 + "-_"
UPNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
HEX = "0123456789abcdef"
DIG = "0123456789"


def rnd(alpha, n):
    return "".join(R.choice(alpha) for _ in range(n))


def b64u(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def jwt(header, payload, sig_len=43):
    h = b64u(json.dumps(header, separators=(",", ":")).encode())
    p = b64u(json.dumps(payload, separators=(",", ":")).encode())
    s = rnd(B64U, sig_len) if sig_len else ""
    return f"{h}.{p}.{s}"


def pem_body(nbytes):
    raw = bytes(R.getrandbits(8) for _ in range(nbytes))
    b = base64.b64encode(raw).decode()
    return "\n".join(b[i:i + 64] for i in range(0, len(b), 64))


def luhn_ok(s):
    d = [int(c) for c in s][::-1]
    t = 0
    for i, x in enumerate(d):
        if i % 2:
            x *= 2
            if x > 9:
                x -= 9
        t += x
    return t % 10 == 0


samples = []


def add(det, kind, text, expect):
    n = sum(1 for s in samples if s["id"].startswith(f"{det}/{kind}/")) + 1
    samples.append({"id": f"{det}/{kind}/{n:02}", "text": text,
                    "expect": [{"detector": d, "value": v} for d, v in expect]})
    for d, v in expect:
        assert v in text, (text, v)


# ---------------------------------------------------------------- email
E = "email"
for t, v in [
    ("Please send the signed contract to jane.doe@example.com by Friday.", ["jane.doe@example.com"]),
    ("Contact: support+billing@example.org", ["support+billing@example.org"]),
    ("From: \"Bob Smith\" <bob.smith@mail.example.co.uk>", ["bob.smith@mail.example.co.uk"]),
    ("Reply-To: no_reply@notifications.example.net\nSubject: Your invoice", ["no_reply@notifications.example.net"]),
    ("The user (alice_99@example.io) reported a crash on login.", ["alice_99@example.io"]),
    ("mailto:first.last@sub-domain.example.com?subject=Hello", ["first.last@sub-domain.example.com"]),
    ('{"name": "Ana", "email": "ana.garcia@ejemplo.es"}', ["ana.garcia@ejemplo.es"]),
    ("Escalate to ops-team@example.com, then cc dev.lead@example.com.", ["ops-team@example.com", "dev.lead@example.com"]),
    ("Benutzer mueller@example.de hat sich um 9:00 angemeldet.", ["mueller@example.de"]),
    ("Je m’appelle Zoé, écrivez-moi à zoe.martin@exemple.fr !", ["zoe.martin@exemple.fr"]),
    ("git log shows: Author: Chen Wei <chen.wei@example.cn>", ["chen.wei@example.cn"]),
    ("CSV row: 42,John,Smith,JOHN.SMITH@EXAMPLE.COM,active", ["JOHN.SMITH@EXAMPLE.COM"]),
    ("Forward to 12345@example.museum for archiving.", ["12345@example.museum"]),
    ("email=user%tag@example.travel&redirect=/home", ["user%tag@example.travel"]),
    ("Signed up as x@example.dev yesterday.", ["x@example.dev"]),
    ("担当者のメールアドレスは tanaka@example.jp です。", ["tanaka@example.jp"]),
    ("メールはsato.k@example.co.jpまでお願いします。", ["sato.k@example.co.jp"]),
    ("Jürgens neue Adresse: jürgen.müller@example.de", ["jürgen.müller@example.de"]),
    ("Kontakt: info@bäckerei-münchen.de (Mo–Fr)", ["info@bäckerei-münchen.de"]),
]:
    add(E, "pos", t, [(E, x) for x in v])
for t in [
    "Ping me on Slack at @jane.doe instead of email.",
    "The connection string uses user@localhost for the test database.",
    "Send it to john@example (the TLD was cut off).",
    "Use the retina asset logo@2x.png in the header and icon@3x.webp in the footer.",
    "Install lodash@4.17.21 and react@18.2.0 before running the build.",
    "Python decorators like @dataclass and @property are handy.",
    "The npm scope @types/node provides the typings.",
    "Contact: jane dot doe at example dot com.",
    "The form rejected name@ because the domain is missing.",
    "SSH into admin@10.0.0.12 to restart the service.",
    "The address a..b@example.com has consecutive dots and bounces.",
    "Pricing: 3 items @ $5.00 each.",
    "The regex ^[\\w.]+@[\\w.]+\\.\\w+$ is a rough address check.",
    "Mention @channel and @here in the release notes.",
    "Trailing dots are invalid too: user.@example.com bounced.",
    "Checkout the tag with git checkout release@v2 first.",
]:
    add(E, "neg", t, [])

# ---------------------------------------------------------------- phone
P = "phone"
for t, v in [
    ("Call me at (212) 555-0123 after 6pm.", ["(212) 555-0123"]),
    ("Our London office: +44 20 7946 0958.", ["+44 20 7946 0958"]),
    ("Support hotline +1 415 555 0132 (24/7).", ["+1 415 555 0132"]),
    ("Berlin desk: +49 30 901820, ask for Jonas.", ["+49 30 901820"]),
    ("Ring 020 7946 0321 to book a table.", ["020 7946 0321"]),
    ("Text the courier on 07700 900123 when you arrive.", ["07700 900123"]),
    ("Service client : +33 1 23 45 67 89", ["+33 1 23 45 67 89"]),
    ("Appelez le 01 23 45 67 89 avant midi.", ["01 23 45 67 89"]),
    ("Tokyo branch: +81 3-1234-5678.", ["+81 3-1234-5678"]),
    ("Telefon: 030-12345678", ["030-12345678"]),
    ("Fax 212.555.0147 is still in service.", ["212.555.0147"]),
    ("E.164 form: +14155550123", ["+14155550123"]),
    ("Sydney: +61 2 9876 5432", ["+61 2 9876 5432"]),
    ("Toll free 1-800-555-0199.", ["1-800-555-0199"]),
    ("From abroad dial +44 (0)20 7946 0958.", ["+44 (0)20 7946 0958"]),
    ("Reception (020) 7946 0123, extension 4.", ["(020) 7946 0123"]),
    ("WhatsApp: +91 98765 43210", ["+91 98765 43210"]),
    ('{"name": "Lee", "phone": "646-555-0177"}', ["646-555-0177"]),
    ("Numéro : +49 89 1234 5678 — merci !", ["+49 89 1234 5678"]),
]:
    add(P, "pos", t, [(P, x) for x in v])
for t in [
    "Release 2024-01-15 shipped version 3.14.159 of the SDK.",
    "Order #123456789 was dispatched this morning.",
    "The gateway IP 192.168.100.200 is reserved.",
    "See ISBN 978-3-16-148410-0 for the reference edition.",
    "The epoch timestamp 1700000000 is in seconds.",
    "Revenue rose from 1,234,567 to 2,345,678 dollars.",
    "The test SSN 123-45-6789 is not a phone number.",
    "Call extension 4567 at the front desk.",
    "Request id 123e4567-e89b-12d3-a456-426614174000 failed.",
    "Invoice date 01-02-2024 10:30, due 15.03.2024.",
    "Build 2023.10.05.1234 passed all checks.",
    "The card 4111 1111 1111 1112 failed the Luhn check.",
    "Temperatures this week: 21 22 23 24 25 26 27 degrees.",
    "Bump to +1.2.3 in the changelog, score was +12 points.",
    "Commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it.",
    "Dial 1-800-FLOWERS for a bouquet.",
    "Coordinates 51.5074, -0.1278 mark central London.",
    "Matrix dims 1024 768 512 256 were benchmarked.",
]:
    add(P, "neg", t, [])

# ---------------------------------------------------------------- credit card
C = "credit_card"
cards = [
    ("Charge the card 4111111111111111 for the deposit.", "4111111111111111"),
    ("Card: 4111 1111 1111 1111, exp 12/29", "4111 1111 1111 1111"),
    ("Mastercard 5555-5555-5555-4444 was declined.", "5555-5555-5555-4444"),
    ("Amex 3782 822463 10005 on file.", "3782 822463 10005"),
    ("Discover 6011111111111117 works for tests.", "6011111111111117"),
    ("JCB test number 3530 1113 3330 0000.", "3530 1113 3330 0000"),
    ('{"pan": "5105105105105100", "cvv": "123"}', "5105105105105100"),
    ("Visa 4012888888881881 (test).", "4012888888881881"),
    ("Amex: 371449635398431", "371449635398431"),
    ("Diners 30569309025904 accepted.", "30569309025904"),
    ("Diners Club 38520000023237 card.", "38520000023237"),
    ("Discover 6011 0009 9013 9424 entered at checkout.", "6011 0009 9013 9424"),
    ("Mastercard 2-series 2223003122003222 approved.", "2223003122003222"),
    ("Visa debit 4000 0566 5566 5556 declined.", "4000 0566 5566 5556"),
    ("UnionPay 6200000000000005 test card.", "6200000000000005"),
    ("Stripe test card 4242-4242-4242-4242 ok.", "4242-4242-4242-4242"),
    ("Old 13-digit Visa 4222222222222 still in the fixtures.", "4222222222222"),
    ("Maestro 6759649826438453 (UK test card).", "6759649826438453"),
    ("Mastercard 2223 0000 4840 0011 via the 2-series range.", "2223 0000 4840 0011"),
    ("JCB 3566002020360505 charged twice.", "3566002020360505"),
    ("Diners 3056930009020004 (16 digits).", "3056930009020004"),
    ("card_number: '5200828282828210'", "5200828282828210"),
    ("Zahlung mit Karte 4111 1111 1111 1111 – danke schön.", "4111 1111 1111 1111"),
]
for t, v in cards:
    assert luhn_ok(v.replace(" ", "").replace("-", "")), v
    add(C, "pos", t, [(C, v)])
neg_cards = [
    "The card 4111 1111 1111 1112 failed the Luhn check.",
    "Order 1234567890123456 shipped yesterday.",
    "Tracking number 9400111899223100012345 is in transit.",
    "The epoch millisecond timestamp 1700000000000 is UTC.",
    "Partial number 4111-1111-1111 was masked.",
    "Card 5555 5555 5555 4445 is mistyped.",
    "Device IMEI 490154203237518 is registered.",
    "Serial 0000 0000 0000 0000 is a placeholder.",
    "Account 12345678901234 belongs to the vendor.",
    "ISBN-13 9783161484100 identifies the book.",
    "Pi is roughly 3.14159265358979 in double precision.",
    "Customer id 4111111111111111111111 is too long for a card.",
    "The card ending in 1111 expired.",
    "Amount 4,111,111,111,111.11 was transferred.",
    "Snowflake id 1234567890123456789 for the message.",
    "Luhn-valid but not a card: 8000000000000003.",
    "Version 4.1.1.1111111111 of the firmware.",
    "let mantissa = -4386812962460287; // from the ASN.1 test vector",
    "const SEED: u64 = 5575266562640200287;",
    # Known limitation, kept on purpose: a 16-digit integer constant with a card prefix that
    # happens to pass Luhn (1 in 10 do) is indistinguishable from a PAN without context.
    "check_normalize(6290184345309700, 778, 11, 12882297539194265600, 767);",
]
for t in neg_cards:
    add(C, "neg", t, [])
assert luhn_ok("8000000000000003")

# ---------------------------------------------------------------- iban
I = "iban"
ibans = [
    ("Please wire the fee to GB82WEST12345698765432.", "GB82WEST12345698765432"),
    ("IBAN: GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 32"),
    ("Konto DE89370400440532013000 bei der Commerzbank.", "DE89370400440532013000"),
    ("IBAN DE89 3704 0044 0532 0130 00, BIC COBADEFFXXX", "DE89 3704 0044 0532 0130 00"),
    ("Virement sur FR1420041010050500013M02606 SVP.", "FR1420041010050500013M02606"),
    ("Rekening NL91ABNA0417164300 (ABN AMRO).", "NL91ABNA0417164300"),
    ("Compte BE68 5390 0754 7034 2024 reference", "BE68 5390 0754 7034"),
    ("Cuenta ES9121000418450200051332 en Madrid.", "ES9121000418450200051332"),
    ("Conto IT60X0542811101000000123456 intestato a Rossi.", "IT60X0542811101000000123456"),
    ("Konto CH9300762011623852957 (Zürich).", "CH9300762011623852957"),
    ("Bank AT611904300234573201, Wien.", "AT611904300234573201"),
    ("Konto NO9386011117947.", "NO9386011117947"),
    ("Rachunek PL61109010140000071219812874.", "PL61109010140000071219812874"),
    ('{"iban": "SE4550000000058398257466"}', "SE4550000000058398257466"),
    ("Konto DK5000400440116243 i Danske Bank.", "DK5000400440116243"),
    ("Tili FI2112345600000785.", "FI2112345600000785"),
    ("IBAN IE29 AIBK 9311 5212 3456 78 for the refund.", "IE29 AIBK 9311 5212 3456 78"),
]
for t, v in ibans:
    add(I, "pos", t, [(I, v)])
for t in [
    "The IBAN GB82 WEST 1234 5698 7654 33 has a typo.",
    "Konto DE89370400440532013001 wurde abgelehnt.",
    "Test value XX82WEST12345698765432 uses no real country.",
    "Model AB12 is discontinued.",
    "Flight BA2490 departs at 10:15.",
    "Part number GB82WEST1234 is on backorder.",
    "We passed ISO27001 certification last year.",
    "Rekening NL91 ABNA 0417 1643 01 is onjuist.",
    "SWIFT code DEUTDEFF500 is not an IBAN.",
    "Creditor reference RF18539007547034 on the invoice.",
    "Postcode SW1A 1AA is Buckingham Palace.",
    "Compte BE68 5390 0754 7035 refusé.",
    "Code GB00WEST12345698765432 has check digits 00.",
    "Cuenta ES91 2100 0418 4502 0005 1333 no existe.",
    "Konto CH93 0076 2011 6238 5295 8 ist falsch.",
    "Rachunek PL61109010140000071219812875 odrzucony.",
]:
    add(I, "neg", t, [])

# ---------------------------------------------------------------- aws
A = "aws_access_key"
aws_rand = ["AKIA" + rnd(UPNUM, 16) for _ in range(6)] + ["ASIA" + rnd(UPNUM, 16) for _ in range(4)]
aws_pos = [
    ("aws_access_key_id = AKIAQ3VR7NXL2MTB5KDW", "AKIAQ3VR7NXL2MTB5KDW"),
    ("export AWS_ACCESS_KEY_ID=AKIAT6HW4JZP2RCX7LNB", "AKIAT6HW4JZP2RCX7LNB"),
    ('{"AccessKeyId": "%s", "Expiration": "2024-06-01T00:00:00Z"}' % aws_rand[6], aws_rand[6]),
    ("The leaked key %s was rotated on Monday." % aws_rand[0], aws_rand[0]),
    ("[default]\naws_access_key_id=%s\nregion=eu-west-1" % aws_rand[1], aws_rand[1]),
    ("creds: %s (temporary)" % aws_rand[7], aws_rand[7]),
    ("Found '%s' in config.py line 12" % aws_rand[2], aws_rand[2]),
    ("AccessKey=%s;Region=us-east-1" % aws_rand[3], aws_rand[3]),
    ("Ключ доступа: %s — удалите его." % aws_rand[4], aws_rand[4]),
    ("- name: AWS_KEY\n  value: %s" % aws_rand[8], aws_rand[8]),
    ("docker run -e AWS_ACCESS_KEY_ID=%s app" % aws_rand[5], aws_rand[5]),
    ("STS returned %s for the session." % aws_rand[9], aws_rand[9]),
    ("Key id `AKIAM5KD3QWZ7VXR2TLH` pasted in the README.", "AKIAM5KD3QWZ7VXR2TLH"),
    ("https://example.com/upload?AWSAccessKeyId=AKIAW2NX6RTB4LQZ7VMD&Expires=1700000000", "AKIAW2NX6RTB4LQZ7VMD"),
    ("log: user=deploy key=%s action=PutObject" % aws_rand[0], aws_rand[0]),
    ("ABIA%s is an STS bearer token id." % "Z3XK7QPLM2NB5VRT", "ABIAZ3XK7QPLM2NB5VRT"),
]
for t, v in aws_pos:
    add(A, "pos", t, [(A, v)])
for t in [
    "AKIA is the prefix used for long-term AWS access key ids.",
    "Truncated: AKIAIOSFODNN7EXAMPL is one character short.",
    "Glued: AKIAIOSFODNN7EXAMPLE1 has an extra character.",
    "Lowercase akiaiosfodnn7example is not a key id.",
    "Prefixed xAKIAIOSFODNN7EXAMPLE is part of a longer word.",
    "The ASIA region and the ASIAPACIFIC market grew.",
    "Report ASIA-PACIFIC-2024-REPORT is attached.",
    "Dashed AKIA-IOSF-ODNN-7EXA-MPLE is not valid.",
    "She is an ACCA qualified accountant.",
    "Underscored AKIA_IOSFODNN7EXAMPLE is a variable name.",
    "arn:aws:iam::123456789012:user/deploy uses key prefix AKIA.",
    "Role id AROAEXAMPLEROLEID1234 is not an access key.",
    "User id AIDAJQABLZS4A3QDU576Q is not an access key.",
    "Broken AKIAIOSFODNN7EXAMP!E has a punctuation mark.",
    "Hash ASIAN0123456789ABCDEFGH is too long.",
]:
    add(A, "neg", t, [])

# ---------------------------------------------------------------- github
G = "github_token"
gh = [p + rnd(B62, 36) for p in ["ghp_", "ghp_", "ghp_", "gho_", "gho_", "ghu_", "ghu_", "ghs_", "ghs_", "ghr_", "ghr_", "ghp_"]]
pat = ["github_pat_" + rnd(B62, 22) + "_" + rnd(B62, 59) for _ in range(4)]
for t, v in [
    ("export GITHUB_TOKEN=%s", gh[0]),
    ("git clone https://%s@github.com/example/repo.git", gh[1]),
    ("Authorization: token %s", gh[2]),
    ('{"access_token":"%s","token_type":"bearer","scope":"repo"}', gh[3]),
    ("OAuth app returned %s after consent.", gh[4]),
    ("user-to-server token %s expires in 8h", gh[5]),
    ("Leaked in CI logs: %s", gh[6]),
    ("installation token: '%s'", gh[7]),
    ("GH_TOKEN=%s gh pr list", gh[8]),
    ("refresh_token=%s&grant_type=refresh_token", gh[9]),
    ("Refresh with %s before it expires.", gh[10]),
    ("トークン %s を削除してください", gh[11]),
    ("Fine-grained PAT: %s", pat[0]),
    ("GITHUB_PAT=%s", pat[1]),
    ("- uses: actions/checkout@v4\n  with:\n    token: %s", pat[2]),
    ("curl -H 'Authorization: Bearer %s' https://api.github.com/user", pat[3]),
]:
    add(G, "pos", t % v, [(G, v)])
for t in [
    "Classic tokens start with ghp_ and fine-grained ones with github_pat_.",
    "Placeholder ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx in docs.",
    "Short ghp_%s is truncated." % rnd(B62, 35),
    "Too long ghp_%s is not a token." % rnd(B62, 37),
    "Wrong prefix ghx_%s is unknown." % rnd(B62, 36),
    "Uppercase GHP_%s is not a GitHub prefix." % rnd(B62, 36),
    "Short fine-grained github_pat_%s was cut." % rnd(B62, 40),
    "Commit 3f786850e387550fdab836ed7e6dc881de23001b on main.",
    "Branch ghp_fix_login was merged.",
    "Dashed ghp-%s uses the wrong separator." % rnd(B62, 36),
    "See https://github.com/example/repo/pull/1234 for details.",
    "Glued myghp_%s is part of a word." % rnd(B62, 36),
    "Zeros ghp_000000000000000000000000000000000000 in the fixture.",
    "Short ghp_ABC123 in the example.",
    "Repository github_pages_site has no token.",
    "The ghs_ prefix marks server-to-server tokens.",
]:
    add(G, "neg", t, [])

# ---------------------------------------------------------------- openai
O = "openai_key"


def oai_body(n):
    while True:
        b = rnd(B62, n)
        if any(c.islower() for c in b) and any(c.isupper() for c in b) and any(c.isdigit() for c in b):
            return b


oa = (["sk-" + oai_body(20) + "T3BlbkFJ" + oai_body(20) for _ in range(5)] +
      ["sk-proj-" + oai_body(74) + "T3BlbkFJ" + rnd(B64U, 74) for _ in range(5)] +
      ["sk-svcacct-" + oai_body(58) + "T3BlbkFJ" + oai_body(58) for _ in range(3)] +
      ["sk-admin-" + oai_body(58) + "T3BlbkFJ" + oai_body(58) for _ in range(2)])
for t, v in zip([
    "OPENAI_API_KEY=%s",
    "openai.api_key = \"%s\"",
    "Authorization: Bearer %s",
    "I accidentally pasted my key %s into the chat, please ignore it.",
    "client = OpenAI(api_key='%s')",
    "export OPENAI_API_KEY=%s",
    '{"openai": {"key": "%s"}}',
    "Project key: %s",
    "Die Schlüssel %s bitte sofort widerrufen.",
    "curl https://api.openai.com/v1/models -H \"Authorization: Bearer %s\"",
    "service account key %s (ci)",
    "SVC_KEY=%s",
    "- %s",
    "admin key %s rotated",
    "ADMIN_KEY: %s",
], oa):
    add(O, "pos", t % v, [(O, v)])
ant_for_neg = "sk-ant-api03-" + oai_body(93) + "AA"
for t, exp in [
    ("We use sk-learn (scikit-learn) for the baselines.", []),
    ("The risk-assessment-framework-document-2024-final was approved.", []),
    ("Short sk-1234 is a ticket number.", []),
    ("Template: sk-your-openai-api-key-here", []),
    ("Placeholder sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx in docs.", []),
    ("Stripe test key sk_test_%s is a different vendor." % rnd(B62, 24), []),
    ("Glued task-%s is a job id." % oai_body(40), []),
    ("Project keys start with sk-proj- followed by random characters.", []),
    ("Ask-me-anything-about-transformers-and-attention-2024 session.", []),
    ("Short sk-%s is too short to be a key." % oai_body(31), []),
    ("Anthropic keys look like %s instead." % ant_for_neg, [("anthropic_key", ant_for_neg)]),
    ("Uppercase SK-%s is not an OpenAI key." % oai_body(48), []),
    ("Letters only: sk-abcdefghijklmnopqrstuvwxyzabcdefghijklmn", []),
    ("Digits only: sk-111111111111111111111111111111111111111111", []),
    ("The disk-usage-report-2024-01-15-final-version-3 file is big.", []),
    ("Tutorial sk-learn-tutorial-part-2-classification-and-regression-models is online.", []),
    ("Env placeholder sk-proj-REPLACE_WITH_YOUR_KEY goes here.", []),
]:
    add(O, "neg", t, exp)

# ---------------------------------------------------------------- anthropic
N = "anthropic_key"
an = (["sk-ant-api03-" + oai_body(93) + "AA" for _ in range(10)] +
      ["sk-ant-admin01-" + oai_body(93) + "AA" for _ in range(3)] +
      ["sk-ant-oat01-" + oai_body(93) + "AA" for _ in range(2)])
for t, v in zip([
    "ANTHROPIC_API_KEY=%s",
    "client = anthropic.Anthropic(api_key=\"%s\")",
    "x-api-key: %s",
    "My key is %s — is that safe to share?",
    "export ANTHROPIC_API_KEY='%s'",
    '{"provider": "anthropic", "key": "%s"}',
    "curl https://api.anthropic.com/v1/messages -H \"x-api-key: %s\"",
    "key rotated: %s",
    "Clé API : %s",
    "- ANTHROPIC_API_KEY=%s",
    "admin key %s",
    "ANTHROPIC_ADMIN_KEY=%s",
    "%s",
    "oauth token %s expired",
    "CLAUDE_CODE_OAUTH_TOKEN=%s",
], an):
    add(N, "pos", t % v, [(N, v)])
for t in [
    "Anthropic keys start with sk-ant- and a version tag.",
    "Placeholder sk-ant-api03-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxAA",
    "Truncated sk-ant-api03-short in the log.",
    "Template sk-ant-api03-<your-key-here> in the README.",
    "Glued desk-ant-api03-%s is a path." % oai_body(95),
    "Uppercase SK-ANT-API03-%s is not valid." % oai_body(95),
    "Short sk-ant-api03-%s is cut off." % oai_body(31),
    "The sk-ant prefix is documented in the console.",
    "mask-ant-api03-%s is a glued token." % oai_body(95),
    "Missing version sk-ant-%s" % ("-" * 3),
    "Letters only sk-ant-api03-abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
    "The antelope sk-antelope-migration-notes are online.",
    "ANTHROPIC_API_KEY=${ANTHROPIC_API_KEY}",
    "Use the header x-api-key with your key from the console.",
    "Digits only sk-ant-api03-1111111111111111111111111111111111111111",
    "Lowercase hex sk-ant-api03-%s" % rnd("abcdef0123456789", 40) + " is missing capitals.",
]:
    add(N, "neg", t, [])

# ---------------------------------------------------------------- slack
S = "slack_token"
sl = ([f"xoxb-{rnd(DIG, 11)}-{rnd(DIG, 13)}-{rnd(B62, 24)}" for _ in range(6)] +
      [f"xoxp-{rnd(DIG, 11)}-{rnd(DIG, 11)}-{rnd(DIG, 13)}-{rnd(HEX, 32)}" for _ in range(4)] +
      [f"xoxa-2-{rnd(DIG, 12)}-{rnd(B62, 40)}" for _ in range(2)] +
      [f"xoxr-{rnd(DIG, 12)}-{rnd(B62, 30)}" for _ in range(2)] +
      [f"xoxs-{rnd(DIG, 10)}-{rnd(DIG, 10)}-{rnd(DIG, 10)}-{rnd(HEX, 64)}" for _ in range(1)])
for t, v in zip([
    "SLACK_BOT_TOKEN=%s",
    "slack_sdk.WebClient(token=\"%s\")",
    "Authorization: Bearer %s",
    "I posted %s in #general by mistake.",
    '{"ok": true, "access_token": "%s"}',
    "bot token: %s",
    "SLACK_USER_TOKEN=%s",
    "export SLACK_TOKEN='%s'",
    "user token %s revoked",
    "xoxp token: %s",
    "workspace token %s",
    "SLACK_APP_TOKEN: %s",
    "refresh %s",
    "rotate_token=%s",
    "legacy %s still works",
], sl):
    add(S, "pos", t % v, [(S, v)])
for t in [
    "xoxo, Jane",
    "Bot tokens start with xoxb- and user tokens with xoxp-.",
    "Template: xoxb-your-bot-token",
    "Placeholder xoxb-0000000000-0000000000-XXXXXXXXXXXXXXXXXXXXXXXX",
    "Wrong type xoxz-12345678901-12345678901-%s" % rnd(B62, 24),
    "Uppercase XOXB-12345678901-12345678901-%s" % rnd(B62, 24),
    "Short xoxb-123456789012-abc is incomplete.",
    "Digits only xoxb-12345678901-12345678901 is not a token.",
    "Glued hoxb-12345678901-%s is something else." % rnd(B62, 24),
    "Missing type xox-12345678901-%s" % rnd(B62, 24),
    "Env ref SLACK_BOT_TOKEN=${SLACK_BOT_TOKEN}",
    "The xoxb prefix identifies bot tokens.",
    "Text: xoxo hugs and kisses xoxoxo",
    "Glued axoxb-12345678901-%s in a hash." % rnd(B62, 24),
    "Letters first xoxb-abcdefghij-%s" % rnd(B62, 24),
]:
    add(S, "neg", t, [])

# ---------------------------------------------------------------- google
GG = "google_api_key"
go = ["AIza" + oai_body(35) for _ in range(15)]
for t, v in zip([
    "GOOGLE_API_KEY=%s",
    "https://maps.googleapis.com/maps/api/js?key=%s&callback=initMap",
    "firebaseConfig = { apiKey: \"%s\", authDomain: \"demo.firebaseapp.com\" }",
    "My Gemini key is %s, why does it 403?",
    "export GEMINI_API_KEY=%s",
    '{"api_key": "%s"}',
    "curl \"https://generativelanguage.googleapis.com/v1/models?key=%s\"",
    "key: %s",
    "Clave de API: %s",
    "<meta name=\"google-maps-key\" content=\"%s\">",
    "YOUTUBE_KEY='%s'",
    "- %s",
    "leaked %s in app.js",
    "places key %s",
    "%s",
], go):
    add(GG, "pos", t % v, [(GG, v)])
for t in [
    "Short AIza%s is truncated." % oai_body(34),
    "Long AIza%s is glued." % oai_body(36),
    "Google keys begin with AIza and have 39 characters.",
    "Lowercase aiza%s is not a key." % oai_body(35),
    "Placeholder AIzaXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "Glued xAIza%s in a blob." % oai_body(35),
    "Wrong prefix AIzb%s" % oai_body(35),
    "Dotted AIza.%s" % oai_body(34),
    "GOOGLE_API_KEY=${GOOGLE_API_KEY}",
    "The AIzaSy prefix is common for browser keys.",
    "Zeros AIza00000000000000000000000000000000000",
    "Spaced AIza %s" % oai_body(35),
    "Maiza%s is a name." % oai_body(35),
    "Half key AIza%s only." % oai_body(20),
    "Underscored _AIza%s is a variable." % oai_body(35),
]:
    add(GG, "neg", t, [])

# ---------------------------------------------------------------- private key
K = "private_key"
pk = []
for kind, n in [("RSA ", 1190), ("", 1218), ("EC ", 121), ("OPENSSH ", 400), ("ENCRYPTED ", 1250), ("DSA ", 440)]:
    pk.append(f"-----BEGIN {kind}PRIVATE KEY-----\n{pem_body(n)}\n-----END {kind}PRIVATE KEY-----")
pgp = f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{pem_body(600)}\n=AbCd\n-----END PGP PRIVATE KEY BLOCK-----"
enc_rsa = ("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n"
           f"{pem_body(1190)}\n-----END RSA PRIVATE KEY-----")
json_key = "-----BEGIN PRIVATE KEY-----\\n" + pem_body(900).replace("\n", "\\n") + "\\n-----END PRIVATE KEY-----\\n"
json_key_v = json_key[: -2]
trunc_body = pem_body(300)
trunc = f"-----BEGIN RSA PRIVATE KEY-----\n{trunc_body}"
crlf = pk[1].replace("\n", "\r\n")
for t, v in [
    ("Here is the key:\n%s\nPlease keep it safe." % pk[0], pk[0]),
    ("```\n%s\n```" % pk[1], pk[1]),
    ("server.key contents:\n%s\n" % pk[2], pk[2]),
    ("id_ed25519:\n%s" % pk[3], pk[3]),
    ("%s" % pk[4], pk[4]),
    ("legacy DSA key\n%s\nend" % pk[5], pk[5]),
    ("gpg --export-secret-keys output:\n%s" % pgp, pgp),
    ("encrypted PEM:\n%s\n" % enc_rsa, enc_rsa),
    ('{"type": "service_account", "private_key": "%s", "client_email": "svc@demo.iam.gserviceaccount.com"}' % json_key, json_key_v),
    ("I only copied the start:\n%s\n\n(truncated)" % trunc, trunc),
    ("windows line endings\r\n%s\r\n" % crlf, crlf),
    ("    %s" % pk[2].replace("\n", "\n    "), pk[2].replace("\n", "\n    ")),
    ("Ключ:\n%s\nСпасибо!" % pk[0], pk[0]),
    ("two keys\n%s\nand\n%s" % (pk[2], pk[5]), None),
    ("key=%s" % pk[1], pk[1]),
]:
    if v is None:
        add(K, "pos", t, [(K, pk[2]), (K, pk[5])])
    else:
        add(K, "pos", t, [(K, v)] + ([("email", "svc@demo.iam.gserviceaccount.com")] if "client_email" in t else []))
pub = f"-----BEGIN PUBLIC KEY-----\n{pem_body(294)}\n-----END PUBLIC KEY-----"
cert = f"-----BEGIN CERTIFICATE-----\n{pem_body(900)}\n-----END CERTIFICATE-----"
for t in [
    "Public key:\n%s" % pub,
    "Certificate:\n%s" % cert,
    "-----BEGIN RSA PUBLIC KEY-----\n%s\n-----END RSA PUBLIC KEY-----" % pem_body(270),
    "Never paste the BEGIN PRIVATE KEY block into chat.",
    "-----BEGIN CERTIFICATE REQUEST-----\n%s\n-----END CERTIFICATE REQUEST-----" % pem_body(600),
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI%s deploy@build-host" % rnd(B62, 43),
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n%s\n-----END PGP PUBLIC KEY BLOCK-----" % pem_body(500),
    "-----BEGIN PGP SIGNATURE-----\n\n%s\n-----END PGP SIGNATURE-----" % pem_body(200),
    "-----BEGIN PGP MESSAGE-----\n\n%s\n-----END PGP MESSAGE-----" % pem_body(300),
    "Rotate the private key every 90 days.",
    "-----BEGIN DH PARAMETERS-----\n%s\n-----END DH PARAMETERS-----" % pem_body(260),
    "-----BEGIN X509 CRL-----\n%s\n-----END X509 CRL-----" % pem_body(400),
    "Missing dashes: BEGIN RSA PRIVATE KEY and END RSA PRIVATE KEY.",
    "-----BEGIN OPENSSH PUBLIC KEY-----\n%s\n-----END OPENSSH PUBLIC KEY-----" % pem_body(100),
    "Format: -----BEGIN <label>----- then base64 then -----END <label>-----",
    "The file private_key.pem is in .gitignore.",
    'const PKCS8_HEADER: &str = "-----BEGIN PRIVATE KEY-----";',
    "/// Parses `-----BEGIN PRIVATE KEY-----`.\n///\n/// # Example\n/// Note: embedding keys in source is discouraged; load them from a file\n/// and check for the `-----END PRIVATE KEY-----` footer.",
]:
    add(K, "neg", t, [])

# ---------------------------------------------------------------- jwt
J = "jwt"
jwts = [
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    jwt({"alg": "RS256", "typ": "JWT", "kid": "k1"}, {"sub": "user-42", "exp": 1900000000, "scope": "read"}, 342),
    jwt({"alg": "ES256", "typ": "JWT"}, {"iss": "https://auth.example.com", "aud": "api", "sub": "a1"}, 86),
    jwt({"typ": "JWT", "alg": "HS512"}, {"sub": "svc", "roles": ["admin"]}, 86),
    jwt({"alg": "none"}, {"sub": "anon"}, 0),
    jwt({"alg": "HS256"}, {"user_id": 7, "session": "x"}),
    jwt({"alg": "RS256", "kid": "2024-01"}, {"email_verified": True, "iat": 1700000000}, 342),
    jwt({"alg": "PS256", "typ": "at+jwt"}, {"client_id": "cli", "scope": "openid"}, 342),
    jwt({"alg": "EdDSA"}, {"sub": "device-9"}, 86),
    jwt({"alg": "HS384", "typ": "JWT"}, {"name": "Zoë", "admin": False}, 64),
    jwt({"alg": "RS256"}, {"iss": "accounts.example.com", "nonce": "abc"}, 342),
    jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "42", "tenant": "acme"}),
    jwt({"alg": "ES384"}, {"sub": "k"}, 128),
    jwt({"alg": "HS256"}, {"refresh": True, "jti": "r-1"}),
    jwt({"alg": "RS512", "typ": "JWT"}, {"sub": "ops", "groups": ["sre"]}, 342),
    jwt({"alg": "HS256"}, {"sub": "cookie-user"}),
]
for t, v in zip([
    "Authorization: Bearer %s",
    "id_token=%s",
    '{"access_token": "%s", "expires_in": 3600}',
    "Cookie: session=%s; Path=/; HttpOnly",
    "Unsigned token %s was accepted (bug!).",
    "https://app.example.com/callback#access_token=%s&state=xyz",
    "Decode this JWT for me: %s",
    "AUTH_TOKEN=%s",
    "token `%s` in the logs",
    "Le jeton %s a expiré.",
    "Header X-Auth: %s",
    "%s",
    "jwt: '%s'",
    "refresh_token: %s",
    "- token: %s",
    "Set-Cookie: jwt=%s; Secure",
], jwts):
    add(J, "pos", t % v, [(J, v)])
hdr_noalg = b64u(b'{"foo":"bar"}')
for t in [
    "The header eyJhbGciOiJIUzI1NiJ9 alone is not a token.",
    "Single segment eyJmb28iOiJiYXIifQ is just base64 JSON.",
    "Two segments eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ only.",
    "No alg: %s.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl" % hdr_noalg,
    "Payload not JSON: eyJhbGciOiJIUzI1NiJ9.aGVsbG8gd29ybGQ.c2lnbmF0dXJl",
    "Broken base64 eyJ!!!.eyJ???.abc in the fixture.",
    "Glued keyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl is a typo.",
    "JWTs start with eyJ because base64 of {\" is eyJ.",
    "Version eyJ.1.2 is not a token.",
    "Base64 of plain text: aGVsbG8gd29ybGQgdGhpcyBpcyBub3QgYSBqd3Q=",
    "Header that is not JSON: eyJub3QganNvbg.eyJzdWIiOiIxMjMifQ.c2ln",
    "JWE with five parts eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGeipsEdY3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDbSv04uVuxIp5Zms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaVmqgfwX7XWRxv2322i-vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je81860ppamavo35UgoRdbYaBcoh9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi6UklfCpIMfIjf7iGdXKHzg.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A.XFBoMYUZodetZdvTiFvSkQ is encrypted.",
    "Dotted words eyJhbGci.OiJIUzI1NiJ9.c2ln are not a JWT.",
    "An empty eyJ.eyJ. pair.",
    "%s" % ("eyJ" + rnd(B62, 40)),
    "Semver 1.2.3 and base64 eyJzdWIiOiIxMjMifQ== in a query.",
]:
    add(J, "neg", t, [])

# ---------------------------------------------------------------- generic
X = "generic_secret"
HF = oai_body(34)
NPM = oai_body(36)
JWTS = rnd(HEX, 64)
AZ = base64.b64encode(bytes(R.getrandbits(8) for _ in range(64))).decode()
for t, v in [
    ("DB_PASSWORD=Xk9#mP2$vL5@nQ8!wR3", "Xk9#mP2$vL5@nQ8!wR3"),
    ('"api_key": "a8f5f167f44f4964e6c998dee827110c"', "a8f5f167f44f4964e6c998dee827110c"),
    ("client_secret: 7Fh2kLp9QzR4mNx8Vb3T", "7Fh2kLp9QzR4mNx8Vb3T"),
    ("Authorization: Bearer 9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c", "9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c"),
    ('password = "Tr0ub4dor&3xyzQ!7"', "Tr0ub4dor&3xyzQ!7"),
    ("secret_token => 'b2c4e6f8a1d3c5e7b9f0a2c4'", "b2c4e6f8a1d3c5e7b9f0a2c4"),
    ("auth_token: ZmFrZS10b2tlbi1mb3ItdGVzdHM9PQ", "ZmFrZS10b2tlbi1mb3ItdGVzdHM9PQ"),
    ('{"sessionToken":"4c1f2e7a-9b3d-4e8f-a6c5-2d9e1b7f3a08"}', "4c1f2e7a-9b3d-4e8f-a6c5-2d9e1b7f3a08"),
    ('apiKey := "q3JmX8vT2nLw9ZkR5pYc"', "q3JmX8vT2nLw9ZkR5pYc"),
    ("MYSQL_ROOT_PASSWORD: hR7$kQ2!mZ9@pL4x", "hR7$kQ2!mZ9@pL4x"),
    ('"private_key_id": "3b8e1c9d2f4a6b0e7c5d8f1a2b3c4d5e6f7a8b9c"', "3b8e1c9d2f4a6b0e7c5d8f1a2b3c4d5e6f7a8b9c"),
    ("mycli login --token=ya29.A0ARrdaM8xK2pQ7vN4mL9sT3wR6yZ1bC5", "ya29.A0ARrdaM8xK2pQ7vN4mL9sT3wR6yZ1bC5"),
    ("webhook_secret = whsec_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH", "whsec_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH"),
    ("PGPASSWORD=S3cur3P@ssw0rd2024!", "S3cur3P@ssw0rd2024!"),
    ("Mein Passwort-Hinweis: password: 'Gr8!Sommer#2031xQ' — bitte löschen.", "Gr8!Sommer#2031xQ"),
    ("STRIPE_SECRET_KEY=rk_test_51H8xYzAbCdEf12345678", "rk_test_51H8xYzAbCdEf12345678"),
    ("credentials: AQoDYXdzEJr1K2L3M4N5O6P7Q8R9S0T", "AQoDYXdzEJr1K2L3M4N5O6P7Q8R9S0T"),
    ("HF_TOKEN=hf_%s" % HF, "hf_" + HF),
    ("//registry.npmjs.org/:_authToken=npm_%s" % NPM, "npm_" + NPM),
    ("JWT_SECRET=%s" % JWTS, JWTS),
    ("AZURE_STORAGE_KEY=%s" % AZ, AZ),
    ("SECRET_KEY = 'django-insecure-8x#k2!mq9@z7$wp3&vb5^rt0'", "django-insecure-8x#k2!mq9@z7$wp3&vb5^rt0"),
    # Known limitation, kept on purpose: a passphrase of whole words without symbols is
    # identifier-shaped and is not reported (see Detector::GenericSecret).
    ("password: CorrectHorseBatteryStaple42", "CorrectHorseBatteryStaple42"),
]:
    add(X, "pos", t, [(X, v)])
for t in [
    "password: changeme",
    "token: ${GITHUB_TOKEN}",
    'api_key = os.environ["API_KEY"]',
    "max_tokens: 4096",
    "token_type: bearer",
    "secret: <your-secret-here>",
    "key: value",
    "OPENAI_API_KEY=your_openai_api_key_here",
    'password = "********************"',
    '"key_path": "/etc/ssl/private/server.key"',
    "token_expires_at: 2024-01-15T10:30:00Z",
    'api_key: "{{ secrets.API_KEY }}"',
    "The key insight is that attention is all you need.",
    "secret_name: production-database-credentials",
    'tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")',
    "password: 1234567890123456",
    "token_count = 1234567",
    '"keyboard_layout": "en-US-international-2024"',
    "api_key_header: X-Api-Key-Version-2",
    "Authorization: Bearer <token>",
    "secret_ref: projects/demo/secrets/db-password/versions/3",
    "    key: super::super::Win32::Foundation::DEVPROPKEY,",
    "private_key_flags: X509CertificateTemplatePrivateKeyFlag",
    "key_type: D3DKMT_PNP_KEY_TYPE",
    "https://example.com/path/data?key=value&key2=value2#fragid1",
    "let key = derive_key(&salt, iterations);",
    "tokenizer_config: models/llama-3.1-8b/tokenizer.json",
]:
    add(X, "neg", t, [])

# ------------------------------------------- added with the outside-set rules (literals)
# Appended last, with fixed strings, so that the seeded bodies above stay the same.
for t, v in [
    ("Old notebook cell: openai.api_key = 'sk-Qw3rTy7uIoP9aSdF2gHjK4lZx6cVbN8mQ1wE5rT0yU3iO7pA'", "sk-Qw3rTy7uIoP9aSdF2gHjK4lZx6cVbN8mQ1wE5rT0yU3iO7pA"),
    ("legacy key sk-Hk2Jf9Lm4Np7Qr1St6Uv3Wx8Yz5Ab0CdEfGh2Ij7Kl9Mn4Op, revoked in 2023", "sk-Hk2Jf9Lm4Np7Qr1St6Uv3Wx8Yz5Ab0CdEfGh2Ij7Kl9Mn4Op"),
]:
    add("openai_key", "pos", t, [("openai_key", v)])
for t in [
    "Typed example sk-Zq8mW2rT5yUabcdefghKp3Lx7Vn1Bc4Df6Gh9Jk2Mn5Pq8R is not a key.",
    "Slug sk-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV is letters only.",
]:
    add("openai_key", "neg", t, [])
for t, v in [
    ("Test fixture key id AKIADEADBEEFDEADBEEF in the mock.", "AKIADEADBEEFDEADBEEF"),
    ("temporary ASIAQWERTYQWERTYQWER from the STS call", "ASIAQWERTYQWERTYQWER"),
]:
    add("aws_access_key", "pos", t, [("aws_access_key", v)])
for t in [
    "Redacted id AKIAXXXXXXXXXXXXXXXX in the runbook.",
]:
    add("aws_access_key", "neg", t, [])
for t, v in [
    ("My test key:\n-----BEGIN RSA PRIVATE KEY-----\nthe real key body goes in this line\n-----END RSA PRIVATE KEY-----\nthanks",
     "-----BEGIN RSA PRIVATE KEY-----\nthe real key body goes in this line\n-----END RSA PRIVATE KEY-----"),
    ("pasted half a key\n-----BEGIN EC PRIVATE KEY-----\ngarbled text after the copy\n\nrest of the message",
     "-----BEGIN EC PRIVATE KEY-----\ngarbled text after the copy"),
]:
    add("private_key", "pos", t, [("private_key", v)])
for t in [
    "-----BEGIN PRIVATE KEY-----\nplaceholder\n-----END PRIVATE KEY-----",
    '{"private_key": "-----BEGIN PRIVATE KEY-----\\n...\\n-----END PRIVATE KEY-----\\n"}',
    "-----BEGIN RSA PRIVATE KEY-----\n<paste your key here>\n-----END RSA PRIVATE KEY-----",
]:
    add("private_key", "neg", t, [])

for t, v in [
    ('var dbToken string = "q8Xk2mV9pL4nR7tY3wZ6"', "q8Xk2mV9pL4nR7tY3wZ6"),
    ('DEPLOY_TOKEN ::= "Hj7kL2mN9pQ4rS6tV8wX"', "Hj7kL2mN9pQ4rS6tV8wX"),
    ('API_SECRET ?= "zR5tY8uI2oP6aS9dF3gH"', "zR5tY8uI2oP6aS9dF3gH"),
    ('$authToken .= "Lm3Nb6Vc9Xz2Aq5Ws8Ed";', "Lm3Nb6Vc9Xz2Aq5Ws8Ed"),
    ('config.set("SERVICE_TOKEN", "Pq7Wx2Er5Ty8Ui3Op6As")', "Pq7Wx2Er5Ty8Ui3Op6As"),
    ("<accessToken>\n  Zx8Cv2Bn5Mm7Qw3Er9Ty\n</accessToken>", "Zx8Cv2Bn5Mm7Qw3Er9Ty"),
    ('db_password = "hunter2x"', "hunter2x"),
    ('if (password == "letmein99") {', "letmein99"),
    ('if ("Winter2024!" === adminPassword) {', "Winter2024!"),
    ("username = deploy\npassword = bluebird77", "bluebird77"),
    ("The admin password is 'Sunset#42' for now.", "Sunset#42"),
    ('var cred = new NetworkCredential("svc-backup", "Q7rT2pLx9");', "Q7rT2pLx9"),
    ('"user_auth": "c3ZjOnA0c3N3MHJkLXRlc3QtdmFsdWU9"', "c3ZjOnA0c3N3MHJkLXRlc3QtdmFsdWU9"),
    ("creds = Yh6Tg4Rf2Ed8Ws1Qa9Zx", "Yh6Tg4Rf2Ed8Ws1Qa9Zx"),
    (":password        => 'r3dw00d!'", "r3dw00d!"),
]:
    add(X, "pos", t, [(X, v)])
for t in [
    "credentialsId: 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d'",
    'public_key = "Xk9mP2vL5nQ8wR3tY6uI1oP4"',
    '"secret_name": "prod-db-main-2"',
    'passwordHint: "at least 12 chars"',
    'password = "${DB_PASSWORD}"',
    "password = env.DB_PASSWORD",
    'password: "required"',
    "if (password == null) {",
    "token_server: auth.internal.example.com:8443",
    "The password is too short.",
    'const keyChars = "0123456789abcdefghijklmnopqrstuvwxyz"',
    "passwordVariable: 'DB_PASS'",
    "<UserSecretsId>4f1c2e7a-9b3d-4e8f-a6c5-2d9e1b7f3a08</UserSecretsId>",
    'label = "Password:" + suffix',
    "git push --force-with-lease is 'safe' enough",
]:
    add(X, "neg", t, [])

add("email", "pos", "Пишите на ivan@xn--80a1acny.xn--e1afmkfd.xn--p1ai до пятницы.",
    [("email", "ivan@xn--80a1acny.xn--e1afmkfd.xn--p1ai")])
add("email", "neg", "Bounce from support@xn--9.example.com: no such domain.", [])

for t, v in [
    ('<appSettings>\n  <add key="SmtpPassword" value="Gr33n!Leaf7"/>\n</appSettings>', "Gr33n!Leaf7"),
    ('auth_param basic password "Tr4ck&Field9";', "Tr4ck&Field9"),
]:
    add(X, "pos", t, [(X, v)])
for t in [
    '<add key="SmtpHost" value="mail.example.com"/>',
    '<add key="PasswordLength" value="12"/>',
    'password "${SMTP_PASS}";',
]:
    add(X, "neg", t, [])

for t in [
    "struct Store { keys: Mutex<HashMap<String, Vec<u8>>>, token_ttl: Option<Duration> }",
    "let key = (request.run_id().to_string(), step);",
    "let token = parenthesized!(content in input);",
    'needless_pass_by_value = "warn"',
    'match kind { Kind::Pass => "Pass", Kind::Fail => "Fail" }',
    'in_environment: ["NEXUS_OPENAI_API_KEY", "OPENAI_API_KEY"]',
    'const WORDS: &[&str] = &["pass", "auth", "creds"];',
]:
    add(X, "neg", t, [])

# ------------------------------------------- added with the outside-set rules, part 5
# AWS: key ids are reported without an entropy floor (detect-secrets, noseyparker,
# secretlint), except AWS's documentation examples (`…EXAMPLE`, gitleaks' allowlist) and
# the `X` mask.
for t, v in [
    ("Template value AKIAAAAAAAAAAAAAAAAA for the test account.", "AKIAAAAAAAAAAAAAAAAA"),
    ("Zeroed ASIA0000000000000000 in the template.", "ASIA0000000000000000"),
]:
    add("aws_access_key", "pos", t, [("aws_access_key", v)])
for t in [
    "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
    "export AWS_ACCESS_KEY_ID=AKIAI44QH8DHBEXAMPLE",
    "Key id `AKIAIOSFODNN7EXAMPLE` in the README example.",
    "https://example.com/upload?AWSAccessKeyId=AKIAI44QH8DHBEXAMPLE&Expires=1700000000",
    "Masked session key ASIAXXXXXXXXXXXXXXXX in the log.",
]:
    add("aws_access_key", "neg", t, [])

# E-mail: RFC 5322 symbols in local parts (RFC 3696 section 3 examples), and the text an
# address is written in: key=value, URL paths and queries, quotes and Markdown, CJK
# punctuation, templates.
for t, v in [
    ("Write to o'brien@example.ie about the lease.", ["o'brien@example.ie"]),
    ("RFC 3696 lists !def!xyz%abc@example.com and $A12345@example.com as valid.",
     ["!def!xyz%abc@example.com", "$A12345@example.com"]),
    ("email=jane.doe@example.com", ["jane.doe@example.com"]),
    ("git config user.email=dev@example.org --global", ["dev@example.org"]),
    ("EMAIL=ci-bot@example.io make release", ["ci-bot@example.io"]),
    ("https://example.com/invite?to=alice@example.org&role=admin", ["alice@example.org"]),
    ("https://example.com/unsubscribe?a=1&email=bob.smith@example.co.uk#done", ["bob.smith@example.co.uk"]),
    ("GET /users/carol@example.com/profile", ["carol@example.com"]),
    ("Set EMAIL to 'ops@example.com' in the env.", ["ops@example.com"]),
    ("Use `dev@example.com` for tests and **admin@example.org** for the repo.", ["dev@example.com", "admin@example.org"]),
    ("|alice@example.com|bob@example.org|", ["alice@example.com", "bob@example.org"]),
    ("~~old@example.com~~ new@example.com", ["old@example.com", "new@example.com"]),
    ("連絡先：tanaka@example.jp", ["tanaka@example.jp"]),
    ("「sato@example.co.jp」までご連絡ください。", ["sato@example.co.jp"]),
    ("担当（suzuki@example.com）、副担当、ito@example.jp。", ["suzuki@example.com", "ito@example.jp"]),
    ("{% if vip %}vip@example.com{% endif %}", ["vip@example.com"]),
]:
    add("email", "pos", t, [("email", x) for x in v])
for t in [
    "Allow *@example.com in the sender filter.",
    "Jinja fills {{ user.name }}@example.com at send time.",
    "f'{user}@example.com' is built per user.",
    'echo "${USER}@example.com"',
    "The template {0}@example.com takes the login.",
]:
    add("email", "neg", t, [])

json.dump({"about": "Labelled corpus for nexus-guard. Every value is synthetic: test card numbers, "
                    "registry example IBANs, made-up AWS key ids (AWS documentation example keys as negatives), fictional phone numbers "
                    "(NANP 555-01xx, Ofcom drama ranges) and randomly generated token bodies. Ids are "
                    "<target detector>/<pos|neg>/<n>; expect lists every item the scanner must report.",
           "samples": samples}, open(sys.argv[1], "w"), indent=1, ensure_ascii=False)
print(len(samples))
