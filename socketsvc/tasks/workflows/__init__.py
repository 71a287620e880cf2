"""Workflows of tasks: chain, group and chord, moved on by their steps' own transactions.

::

    from socketsvc.tasks import chain, chord, group, get_workflow

    flow = chord(group(count_stock.with_args(s.pk) for s in suppliers), merge_report).enqueue()
    get_workflow(flow.id).status       # RUNNING, SUCCESSFUL, FAILED or CANCELLED

``canvas``: what a workflow is made of; ``shapes``: the graph as data;
``enqueue``: every row in one transaction; ``fanin``: the steps' transactions
moving it on; ``state``: reading and cancelling it.
"""
