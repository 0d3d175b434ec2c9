"""iw-SFT for language models and reasoning evaluation (paper §4.1; REFERENCE §5).

The pipeline is four commands, each a function of the files the previous one wrote:

    bench llm prepare     s1K-1.1 -> tokenised chat examples, loss only on the assistant turn
    bench llm ref-logps   one pass of pi_ref (the starting model) -> per-token log-probs per example
    bench llm train       accelerate loop: sft | iw_sft | iw_sft_paper | iw_sft_paper_mean | iw_sft_token
    bench llm eval        AIME 2024 / MATH500 / GPQA Diamond, graded with math-verify

`bench llm smoke` runs all four on a tiny random Qwen2 model built locally, on CPU.
Importing this package does not import transformers; each module imports what it needs.
"""
