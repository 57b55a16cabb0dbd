"""Pure decisions: completion rules, the reset state machine, the due rule, jobs as values.

No I/O and no database: everything here is a function of its arguments.
"""
