"""Helper for .ci/readme-grpcurl.sh: finds README.md's grpcurl and buf curl lines, fills in
their placeholders, and judges each answer from the line itself.

Subcommands (the shell script runs the commands; this file only reads and judges):
  extract README.md     the lines to run, NUL-separated records "lineno\\x1fkind\\x1fcommand\\x1fexpect"
  count README.md       how many lines of its fenced blocks start with grpcurl or buf curl
  subst STATE CMD       CMD with its placeholders replaced by this run's secrets (to stdout)
  check STATE CMD EXPECT RC OUTFILE   OK with a short reason, or exit 1 with the reason
  mask FILE             FILE with tokens, passwords and codes replaced by ***
  totp SECRET           the current RFC 6238 code (SHA-1, 6 digits, 30 s)

A line's check comes from the line: the expected-output comment after it ("# -> ..."), else
what the command is (list, describe, a known method). A line this file cannot judge fails.
Only standard-library Python: CI has no packages for this.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shlex
import struct
import sys
import time
from urllib.parse import urlparse

# The mesh's standard ports (README: auth-svc 50051 ... audit-svc 50055) and their packages;
# the plaintext probe ports (501xx) serve health only.
PACKAGE_OF_PORT = {50051: "auth", 50052: "messaging", 50053: "abe", 50054: "records", 50055: "audit"}
OPS_PORTS = set(range(50151, 50156))

TOOL_LINE = re.compile(r"^\s*(grpcurl|buf curl)\s")
ASSIGNMENT = re.compile(r"^[A-Z][A-Z0-9_]*=")
SECRET_FIELDS = re.compile(r'("(?:accessToken|refreshToken|challengeToken|ceremonyToken|password|totpCode|access_token|refresh_token)"\s*:\s*")[^"]*')
SECRET_TOKENS = re.compile(r"\b(cmt1\.|cmr1_|cmc1_|cmk1_)[A-Za-z0-9._~+/=-]+")


def mask(text):
    return SECRET_TOKENS.sub(r"\1***", SECRET_FIELDS.sub(r"\1***", text))


def extract(readme):
    """The logical lines of every ```sh block that has a grpcurl or buf curl line: the tool lines
    (backslash continuations joined) and the variable assignments they use, each with the
    expected-output comment that follows it, if any."""
    lines = open(readme, encoding="utf-8").read().splitlines()
    blocks, block, start = [], None, 0
    for number, line in enumerate(lines, 1):
        if block is None and line.strip() == "```sh":
            block, start = [], number + 1
        elif block is not None and line.strip() == "```":
            blocks.append((start, block))
            block = None
        elif block is not None:
            block.append(line)
    records = []
    for start, block in blocks:
        logical, i = [], 0
        while i < len(block):
            number, text = start + i, block[i]
            while text.endswith("\\") and i + 1 < len(block):
                i += 1
                text = text[:-1].rstrip() + " " + block[i].strip()
            logical.append((number, text.strip()))
            i += 1
        if not any(TOOL_LINE.match(text) for _, text in logical):
            continue
        for k, (number, text) in enumerate(logical):
            if TOOL_LINE.match(text):
                kind = "tool"
            elif ASSIGNMENT.match(text):
                kind = "assign"
            else:
                continue
            # "# -> answer" right after the line, then optional "#    Details: ..." lines.
            expect = []
            for _, after in logical[k + 1:]:
                if not expect and after.startswith("# ->"):
                    expect.append(after[4:].strip())
                elif expect and re.match(r"#\s+Details:", after):
                    expect.append(after[1:].strip())
                else:
                    break
            records.append(f"{number}\x1f{kind}\x1f{text}\x1f" + "\n".join(expect))
    sys.stdout.write("".join(record + "\0" for record in records))


def count(readme):
    """Lines starting with grpcurl or buf curl in any fenced block, ```sh or not: `extract` must
    have found them all, or one would go unchecked."""
    fenced, total = False, 0
    for line in open(readme, encoding="utf-8"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and TOOL_LINE.match(line):
            total += 1
    print(total)


def totp(secret, step=None):
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    step = int(time.time()) // 30 if step is None else step
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 15
    return "%06d" % ((struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000)


def load(state, name):
    try:
        return json.load(open(os.path.join(state, name), encoding="utf-8"))
    except (OSError, ValueError):
        return None


def subst(state, command):
    """Replaces the README's placeholders with this run's values; fails on any it cannot fill."""
    secrets = load(state, "secrets.json")
    if ASSIGNMENT.match(command):
        if command == "TOKEN=...":
            tokens = load(state, "tokens.json")
            if not tokens:
                sys.exit("TOKEN=... but no earlier line returned tokens")
            return "TOKEN=" + shlex.quote(tokens["accessToken"])
        if "..." in command:
            sys.exit("a placeholder this script does not know how to fill")
        return command
    if '"password":"..."' in command:
        user = re.search(r'"username":"([^"]+)"', command)
        if not user or user.group(1) not in secrets["passwords"]:
            sys.exit("a password placeholder for a user this script did not create")
        command = command.replace('"password":"..."', '"password":"%s"' % secrets["passwords"][user.group(1)])
    if '"challengeToken":"..."' in command:
        login = load(state, "login.json") or {}
        challenge = login.get("mfaChallenge", {}).get("challengeToken")
        if not challenge:
            sys.exit("challengeToken placeholder but the last Login returned no mfaChallenge")
        command = command.replace('"challengeToken":"..."', '"challengeToken":"%s"' % challenge)
    if re.search(r'"totpCode":"\d{6}"', command):
        # Each code is accepted once (replay protection): after a used step, wait for the next.
        step_file = os.path.join(state, "totp-step")
        used = int(open(step_file).read()) if os.path.exists(step_file) else -1
        while int(time.time()) // 30 <= used:
            time.sleep(1)
        step = int(time.time()) // 30
        open(step_file, "w").write(str(step))
        command = re.sub(r'"totpCode":"\d{6}"', '"totpCode":"%s"' % totp(secrets["admin_totp"], step), command)
    if "..." in command:
        sys.exit("a placeholder this script does not know how to fill")
    return command


# Flags of the two tools: those that take a value (so the next word is not a positional).
GRPCURL_VALUE = {"-cacert", "-cert", "-key", "-d", "-H", "-rpc-header", "-reflect-header", "-authority",
                 "-servername", "-max-time", "-connect-timeout", "-keepalive-time", "-format", "-max-msg-sz",
                 "-proto", "-protoset", "-import-path", "-user-agent"}
GRPCURL_BOOL = {"-plaintext", "-insecure", "-v", "-vv", "-format-error", "-emit-defaults",
                "-allow-unknown-fields", "-use-reflection"}
BUF_VALUE = {"--protocol", "--reflect-protocol", "--cacert", "--cert", "--key", "-d", "--data", "-H", "--header",
             "--reflect-header", "--servername", "--connect-timeout", "--user-agent", "--schema"}
BUF_BOOL = {"--list-methods", "--list-services", "--http2-prior-knowledge", "--insecure", "-k", "-v", "--verbose",
            "--emit-defaults"}


class Unknown(Exception):
    """A line this file does not know how to judge."""


class Failed(Exception):
    """The answer is not what the line should give."""


def need(condition, reason):
    if not condition:
        raise Failed(reason)


def parse(command):
    """(tool, port, verb, symbol, request): verb is list, describe, call or list-methods."""
    words = shlex.split(os.path.expandvars(command), comments=True)
    tool = "buf" if words[:2] == ["buf", "curl"] else "grpcurl"
    words = words[2:] if tool == "buf" else words[1:]
    values, bools = (BUF_VALUE, BUF_BOOL) if tool == "buf" else (GRPCURL_VALUE, GRPCURL_BOOL)
    flags, positional, i = {}, [], 0
    while i < len(words):
        word = words[i]
        if word.startswith("-"):
            name, eq, value = word.partition("=")
            if name in values:
                if not eq:
                    i += 1
                    value = words[i]
                flags[name] = value
            elif name in bools:
                flags[name] = True
            else:
                raise Unknown(f"unknown {tool} flag {name}")
        else:
            positional.append(word)
        i += 1
    request = flags.get("-d", flags.get("--data"))
    if tool == "buf":
        if len(positional) != 1:
            raise Unknown("buf curl needs exactly one URL")
        url = urlparse(positional[0])
        path = url.path.strip("/")
        if flags.get("--list-methods") or flags.get("--list-services"):
            return tool, url.port, "list-methods" if flags.get("--list-methods") else "list", None, None
        return tool, url.port, "call", path, request
    address, rest = positional[0], positional[1:]
    port = int(address.rsplit(":", 1)[1])
    if rest and rest[0] in ("list", "describe"):
        return tool, port, rest[0], rest[1] if len(rest) > 1 else None, None
    if len(rest) == 1 and "/" in rest[0]:
        return tool, port, "call", rest[0], request
    raise Unknown("not a list, describe or method call")


def answer_json(out):
    try:
        return json.loads(out)
    except ValueError:
        raise Failed("the answer is not one JSON message")


def subset(pattern, actual, path="answer"):
    """Every key of the README's example is in the answer; "..." stands for any value."""
    if pattern == "...":
        return
    if isinstance(pattern, dict):
        if not isinstance(actual, dict):
            raise Failed(f"{path} is not an object")
        for key, value in pattern.items():
            if key not in actual:
                raise Failed(f"{path} has no {key!r}")
            subset(value, actual[key], f"{path}.{key}")
    elif pattern != actual:
        raise Failed(f"{path} is {actual!r}, not {pattern!r}")


def method_check(method, answer, request):
    """What a plausible answer of each method that README lines call looks like."""
    if method == "grpc.health.v1.Health/Check":
        need(answer.get("status") == "SERVING", "status is not SERVING")
        return "SERVING"
    if method == "caremesh.auth.v1.AuthService/Login":
        need("tokens" in answer or "mfaChallenge" in answer, "neither tokens nor mfaChallenge")
        return "tokens" if "tokens" in answer else "mfaChallenge"
    if method == "caremesh.auth.v1.AuthService/CompleteLogin":
        need(answer.get("tokens", {}).get("accessToken"), "no tokens.accessToken")
        return "tokens, " + answer["tokens"].get("aal", "?")
    if method == "caremesh.auth.v1.AuthService/WhoAmI":
        username = answer.get("user", {}).get("username")
        need(username, "no user.username")
        return f"{username}, {answer.get('aal', '?')}"
    if method == "caremesh.auth.v1.AuthAdminService/ListUsers":
        users = answer.get("users", [])
        wanted = json.loads(request or "{}").get("status")
        need(users, "no users (the script registered a pending doctor)")
        need(all(user.get("status") == wanted for user in users if wanted), f"a user not {wanted}")
        return f"{len(users)} user(s): " + ", ".join(user.get("username", "?") for user in users)
    if method == "caremesh.auth.v1.AuthService/StartPasskeyLogin":
        # bytes fields are base64 in grpcurl's JSON; inside, WebAuthn's own JSON (base64url binaries).
        need(answer.get("ceremonyToken", "").startswith("cmk1_"), "no ceremonyToken")
        options = json.loads(base64.b64decode(answer.get("requestOptionsJson", "")))
        public_key = options.get("publicKey", {})
        need(public_key.get("challenge") and public_key.get("rpId") == "localhost", "no challenge for rpId localhost")
        need(public_key.get("userVerification") == "required", "user verification is not required")
        return f"a passkey sign-in for {public_key['rpId']}"
    raise Unknown(f"no check for {method}: add a '# -> ...' line after it in README.md")


def error_check(tool, expect, out):
    """'Code: message' (with '...' for any text), then 'Details: TYPE reason REASON' lines."""
    first, *details = expect.split("\n")
    code, _, message = first.partition(": ")
    message_re = ".*".join(re.escape(part) for part in message.split("..."))
    if tool == "grpcurl":
        need(re.search(rf"^\s*Code: {re.escape(code)}$", out, re.M), f"not {code}")
        need(re.search(rf"^\s*Message: {message_re}$", out, re.M), "another message")
    else:
        error = answer_json(out)
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", code).lower()
        need(error.get("code") == snake, f"not {snake}")
        need(re.fullmatch(message_re, error.get("message", "")), "another message")
    for line in details:
        match = re.fullmatch(r"Details: (\S+) reason (\S+)", line)
        if not match:
            raise Unknown(f"cannot read {line!r}")
        detail_type, reason = match.groups()
        if tool == "grpcurl":
            found = any(f'"@type":"type.googleapis.com/{detail_type}"' in row and f'"reason":"{reason}"' in row
                        for row in out.splitlines())
        else:
            # buf curl prints details as base64 protobuf; ErrorInfo's field 1 is the reason.
            found = False
            for detail in error.get("details", []):
                raw = base64.b64decode(detail.get("value", "") + "==")
                if detail.get("type") == detail_type and raw[:1] == b"\n" and raw[2:2 + raw[1]] == reason.encode():
                    found = True
        need(found, f"no {detail_type} detail with reason {reason}")
    return f"{code}" + (f" + {len(details)} detail(s)" if details else "")


def check(state, command, expect, rc, out):
    tool, port, verb, symbol, request = parse(command)
    if expect and not expect.startswith("{"):
        need(rc != 0, f"exit {rc}, but the README shows an error")
        return error_check(tool, expect, out)
    need(rc == 0, "the call failed")
    if port in OPS_PORTS:
        package = None
    elif port in PACKAGE_OF_PORT:
        package = f"caremesh.{PACKAGE_OF_PORT[port]}.v1."
    else:
        raise Unknown(f"port {port} is not a caremesh port")
    names = out.split()
    if verb == "list" and symbol is None:
        need("grpc.health.v1.Health" in names, "no grpc.health.v1.Health")
        need(package is None or any(name.startswith(package) for name in names), f"no {package}* service")
        return f"{len(names)} services"
    if verb == "list":
        need(names and all(name.startswith(symbol + ".") for name in names), f"not the methods of {symbol}")
        return f"{len(names)} methods"
    if verb == "list-methods":
        need(names and all("/" in name for name in names), "not service/method names")
        need(package is None or any(name.startswith(package) for name in names), f"no {package}* method")
        return f"{len(names)} methods"
    if verb == "describe":
        if symbol is None:
            raise Unknown("describe without a symbol")
        kind = re.match(rf"{re.escape(symbol)} is an? (method|message|service|enum|field)", out)
        need(kind, f"does not describe {symbol}")
        return f"a {kind.group(1)}"
    answer = answer_json(out)
    if expect:
        # The README's example answer: '{"tokens": {"accessToken": "...", ...}}'.
        subset(json.loads(expect.replace(", ...", "")), answer)
    reason = method_check(symbol, answer, request)
    if symbol.endswith("/Login") or symbol.endswith("/CompleteLogin"):
        # What later placeholders need: the challenge, or the tokens for TOKEN=...
        json.dump(answer, open(os.path.join(state, "login.json"), "w"))
        if "tokens" in answer:
            json.dump(answer["tokens"], open(os.path.join(state, "tokens.json"), "w"))
    return reason


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "extract":
        extract(*args)
    elif command == "count":
        count(*args)
    elif command == "subst":
        print(subst(*args))
    elif command == "mask":
        sys.stdout.write(mask(open(args[0], encoding="utf-8", errors="replace").read()))
    elif command == "totp":
        print(totp(args[0]))
    elif command == "check":
        state, line, expect, rc, out = args
        try:
            print(check(state, line, expect, int(rc), open(out, encoding="utf-8", errors="replace").read()))
        except Unknown as error:
            sys.exit(f"don't know how to check this line: {error}")
        except Failed as error:
            sys.exit(str(error))
    else:
        sys.exit(f"unknown subcommand {command}")


if __name__ == "__main__":
    main(sys.argv)
