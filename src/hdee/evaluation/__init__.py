"""Turning experts into numbers: per-domain perplexities of experts and ensembles (`evaluate`), the
main table's method (`method_choice`), any new text (`new_text`), ensembles without some experts
(`optout`) and the lm-eval-harness adapter (`lm_eval`)."""
