"""test-summary.py - totals of meson test results over several build trees.

Reads each tree's meson-logs/testlog.json and prints the failed tests by name,
then one closing line "N passed, M failed".  Exit status 1 when any failed or
when no test ran at all."""
import json
import sys


def main(dirs):
    passed, failed = 0, []
    for d in dirs:
        try:
            with open(f"{d}/meson-logs/testlog.json", encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    if r["result"] == "OK":
                        passed += 1
                    else:
                        failed.append(f"{d}: {r['name']} ({r['result']})")
        except FileNotFoundError:
            failed.append(f"{d}: no test log")
    for name in failed:
        print("FAILED", name)
    print(f"{passed} passed, {len(failed)} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
