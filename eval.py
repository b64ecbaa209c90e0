"""Entry point: ``python eval.py <config.yaml> [key.path=value ...] [--weights PATH --kind KIND] [--rerank-k K]``.

``python eval.py zeroshot --data DIR --weights PATH ...`` runs zero-shot image classification;
``python eval.py vqa-score --questions Q --annotations A --results R`` scores a VQA results file
with the official evaluator's steps; ``python eval.py --list-pretrained`` prints the pretrained names
(``--weights NAME`` downloads one into the cache).
"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["vqa-score"]:  # before importing the trainer stack: scoring needs none of it
        from vlmo_composer.evaluation.vqa_score import main as vqa_score

        sys.exit(vqa_score(sys.argv[2:]))
    if "--list-pretrained" in sys.argv[1:]:  # the registry table needs no trainer either
        from vlmo_composer.checkpoints.pretrained import pretrained_table

        print(pretrained_table())
        sys.exit(0)
    if sys.argv[1:2] != ["zeroshot"]:
        # --help, a bad flag and a missing YAML are answered before torch and Composer are imported.
        from vlmo_composer.evaluation.args import early_answer

        code = early_answer(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    from vlmo_composer.evaluation.cli import main

    sys.exit(main())
