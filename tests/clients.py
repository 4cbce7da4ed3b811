"""redis-py against a running rediscover, over RESP2 and RESP3.

usage: clients.py HOST PORT EXPECTED_JSON

EXPECTED_JSON holds what the server must answer:
  {"discover": {"<container>": "<ip:port@bus>", ...},
   "errors": {"<container>": "<CODE>", ...},
   "members": ["<ip:port@bus>", ...],
   "table_size": <n>,
   "down_port": <port of a server whose Docker is unreachable>}

Prints one line per failed check and "N passed, M failed"; exits 1 when any check failed.
"""

import json
import sys

import redis

passed = 0
failed = 0


def check(name, fn):
    global passed, failed
    try:
        fn()
    except Exception as e:  # every failure is counted and named, the run goes on
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")
    else:
        passed += 1


def expect_equal(got, want):
    if got != want:
        raise AssertionError(f"got {got!r}, want {want!r}")


def expect_error(fn, prefix):
    try:
        got = fn()
    except redis.ResponseError as e:
        if not str(e).startswith(prefix):
            raise AssertionError(f"error {str(e)!r} does not start with {prefix!r}")
        return str(e)
    raise AssertionError(f"got {got!r}, want an error starting with {prefix!r}")


def run(host, port, expected, protocol):
    tag = f"resp{protocol}"
    r = redis.Redis(host=host, port=port, protocol=protocol, decode_responses=True, socket_timeout=10)
    discover = expected["discover"]
    names = sorted(discover)

    check(f"{tag} ping", lambda: expect_equal(r.ping(), True))
    check(f"{tag} echo", lambda: expect_equal(r.echo("héllo, wörld\r\n"), "héllo, wörld\r\n"))

    for name, answer in discover.items():
        check(f"{tag} discover {name}", lambda n=name, a=answer: expect_equal(r.execute_command("DISCOVER", n), a))

    for name, code in expected["errors"].items():
        def discover_error(n=name, c=code):
            text = expect_error(lambda: r.execute_command("DISCOVER", n), c + " ")
            if n not in text:
                raise AssertionError(f"error {text!r} does not name {n!r}")

        check(f"{tag} discover {name} is {code}", discover_error)

    check(f"{tag} connection survives errors", lambda: expect_equal(r.ping(), True))
    check(
        f"{tag} unknown command",
        lambda: expect_error(lambda: r.execute_command("GET", "k"), "unknown command 'GET'"),
    )
    check(f"{tag} members", lambda: expect_equal(r.execute_command("MEMBERS"), expected["members"]))

    # CLIENT SETNAME names one connection, so this client keeps a single one.
    named = redis.Redis(
        host=host, port=port, protocol=protocol, decode_responses=True, single_connection_client=True
    )

    def client_name():
        expect_equal(named.client_setname(f"py-{tag}"), True)
        expect_equal(named.client_getname(), f"py-{tag}")

    check(f"{tag} client setname/getname", client_name)

    def info():
        all_info = r.info()
        expect_equal(all_info["redis_mode"], "standalone")
        expect_equal(all_info["tcp_port"], port)
        docker = r.info("docker")
        expect_equal(docker["table_size"], expected["table_size"])
        expect_equal(docker["table_fresh"], 1)
        if "redis_mode" in docker:
            raise AssertionError("INFO docker also printed the server section")

    check(f"{tag} info as dict", info)

    def pipeline():
        pipe = r.pipeline(transaction=False)
        for i in range(100):
            if i % 2:
                pipe.execute_command("DISCOVER", names[i % len(names)])
            else:
                pipe.echo(f"message {i}")
        got = pipe.execute()
        want = [discover[names[i % len(names)]] if i % 2 else f"message {i}" for i in range(100)]
        expect_equal(got, want)

    check(f"{tag} pipeline of 100", pipeline)

    def pipeline_with_errors():
        pipe = r.pipeline(transaction=False)
        error_name = sorted(expected["errors"])[0]
        pipe.execute_command("DISCOVER", names[0])
        pipe.execute_command("DISCOVER", error_name)
        pipe.ping()
        got = pipe.execute(raise_on_error=False)
        expect_equal(got[0], discover[names[0]])
        if not isinstance(got[1], redis.ResponseError):
            raise AssertionError(f"got {got[1]!r}, want a ResponseError")
        if not str(got[1]).startswith(expected["errors"][error_name] + " "):
            raise AssertionError(f"pipelined error {str(got[1])!r}")
        expect_equal(got[2], True)

    check(f"{tag} pipeline keeps errors in place", pipeline_with_errors)

    if protocol == 3:
        def hello():
            reply = r.execute_command("HELLO", "3")
            expect_equal(reply["proto"], 3)
            expect_equal(reply["server"], "rediscover")
            expect_equal(reply["mode"], "standalone")

        check(f"{tag} hello map", hello)

    down = redis.Redis(host=host, port=expected["down_port"], protocol=protocol, decode_responses=True)
    check(f"{tag} ping without docker", lambda: expect_equal(down.ping(), True))
    check(
        f"{tag} discover without docker is DOCKERDOWN",
        lambda: expect_error(lambda: down.execute_command("DISCOVER", names[0]), "DOCKERDOWN "),
    )
    r.close()
    named.close()
    down.close()


def main():
    host, port, expected = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    for protocol in (2, 3):
        run(host, port, expected, protocol)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
