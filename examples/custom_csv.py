"""Your own task from a CSV file: a zero-shot prompt against a learned soft prompt, through the Python API.

    python examples/custom_csv.py                                # the embedded SmolLM2-135M, offline, a few CPU minutes
    python examples/custom_csv.py --model path/to/checkpoint --k 8 --steps 50 --csv my_reviews.csv

The CSV needs a ``review`` and a ``label`` column (labels ``neg`` / ``pos``); the first 24 rows are
the pool that K examples per class are drawn from for training (and another K for dev), the other
rows are the test set. Both methods read the same template and verbalizer: the manual prompt
scores it as it is, the soft prompt puts 4 trained vectors in front of it. The table gives, per
method, test accuracy of the dev-selected run over the data splits and the spread of all runs.
"""
import argparse
from pathlib import Path

from prompting import Experiment, LanguageModel, MethodSpec, Protocol, Task, load_examples
from prompting.reporting.aggregate import aggregate
from prompting.reporting.tables import summary_table

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="smollm2-135m", help="alias, local checkpoint folder or cached hub id")
parser.add_argument("--csv", default=Path(__file__).parent / "data" / "reviews.csv")
parser.add_argument("--k", type=int, default=4, help="examples per class for training, and again for dev")
parser.add_argument("--steps", type=int, default=30, help="training steps of the soft prompt")
parser.add_argument("--test-limit", type=int, default=None, help="score only this many test examples")
args = parser.parse_args()

examples = load_examples(args.csv, fields={"text_a": "review"}, label_column="label")
task = Task(name="reviews", labels=("neg", "pos"), text_fields=("text_a",), train=examples[:24], test=examples[24:])
template = "Review: {text_a}\nSentiment: {mask}"
verbalizer = {"neg": ["negative"], "pos": ["positive"]}
methods = [MethodSpec("manual", train=False),
           MethodSpec("soft", params={"prompt_tokens": 4}, train_config={"max_steps": args.steps, "batch_size": 4})]
experiment = Experiment(LanguageModel.load(args.model), task, methods, prompts=[(template, verbalizer)],
                        protocol=Protocol(k=args.k, data_seeds=(13, 21), test_limit=args.test_limit))
print(summary_table(aggregate(experiment.run(progress=False))))
