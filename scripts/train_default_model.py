"""Re-estimate the packaged default linkage model (src/federation/identity/default_model.json).

    python scripts/train_default_model.py [--people 60000]

The gateway links its first records before it has seen enough of its own data to learn
from, so it starts with this model: estimated (u from value frequencies and random
pairs, m and the prior by EM — never hand-set) from a synthetic population of the
consortium's shape, with a seed of its own (not the demo's). ``federation identity tune
--apply`` replaces it with weights learnt from the gateway's own records.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from federation.identity.bulk import link_rows
from federation.synth.generator import SITES, _assign_sites
from federation.synth.noise import NoiseLog, NoiseRates, apply_noise
from federation.synth.people import make_population

OUT = Path(__file__).resolve().parents[1] / "src/federation/identity/default_model.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=60_000)
    ap.add_argument("--seed", default="default-model")
    args = ap.parse_args()
    pop = make_population(random.Random(f"{args.seed}:people"), args.people)
    presence = _assign_sites(random.Random(f"{args.seed}:sites"), pop)
    tiers = {s[0]: s[2] for s in SITES}
    rng, log = random.Random(f"{args.seed}:noise"), NoiseLog()
    rows = []
    for p in pop.people:
        for site in presence[p.person_id]:
            a = apply_noise(rng, p, site, tiers[site], NoiseRates(), log)
            rows.append({"record_id": f"{site}-{len(rows)}", "site": site, "name": a.name,
                         "sex": a.sex, "birth_date": a.birth_date.isoformat(),
                         "national_id": a.resident_id or "", "phone": a.phone or "",
                         "address": a.address})
    model = link_rows(rows).model
    model.trained_on = {**model.trained_on, "source": f"synthetic population, seed "
                        f"'{args.seed}', {args.people} people", "at": None}
    OUT.write_text(json.dumps(model.as_json(), indent=2, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    print(f"wrote {OUT} from {len(rows)} records")


if __name__ == "__main__":
    main()
