"""The stages of the loop, one module each, one entry function each (listed below; a few helpers
they share with the loop or the tests are public too, e.g. `select.truncate_at_reflection`).

    caption      caption_problems      captioner describes each problem's images
    distill      distill_traces        reasoner answers from caption + question, k traces each
    regenerate   regenerate_traces     the previous GRPO model answers from the images, k traces each
    select       select_traces         reward plugin judges every trace; keep one per problem
    sft          train_sft             SFT from the base student on the selected traces
    rl_data      select_rl_problems    pass rate under the current model; keep a band
    grpo         train_grpo            GRPO from this iteration's SFT model
    evaluate     evaluate_model        accuracy on the held-out sets
    prepare      prepare_inputs        build the toy world / tiny student for the embedded default

Each function reads and writes files and can be called on its own (from a test or a notebook);
`openvlt.loop` sequences them inside a resumable workspace.
"""
