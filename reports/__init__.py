"""Reports: the describe, training and eval HTML pages and all charts, from Jinja2 templates.

They read the files the other packages leave in a folder (descriptions.jsonl, metrics.jsonl,
report.json, ...) and import none of training or evaluation; the training commands hand the
trainer `charts.write_curves` to redraw the curves after every checkpoint.

    pages         write_report / write_reports: the page(s) of whatever a folder holds
    describe_page the describe run's page          templates/describe.html.j2, static/describe.js
    train_page    the training run's page          templates/train.html.j2
    eval_page     the AutoDQ evaluation's page     templates/eval.html.j2, static/eval.js
    task_page     a benchmark task's page (MCQ, open-ended QA, captioning)  templates/task.html.j2
    charts        every matplotlib chart: loss, learning rate, DPO rewards, AutoDQ categories
    results       the result files' names, which kinds a folder holds, tolerant readers
    formats       numbers, times, percentages and links as a page shows them
    render        the Jinja2 environment (autoescape), the static CSS/JS inlined, the atomic write

Importing the package (or charts) is cheap: Jinja2 loads with the page modules, matplotlib only
inside the functions that draw.
"""
