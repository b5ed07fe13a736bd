"""The bad-input suite: every way data enters Rapport, fed something hostile or broken.

Each case asserts a clear error (exit 2 or a ComposeError/ConfigError naming file, line and
field, with the database unchanged) or a safe result (stored as given; composed mail with
single-line headers and HTML without active content; a poll that records every message).

=============================================  ================================  =====
entry point                                    module                            cases
=============================================  ================================  =====
CSV imports (participants, coordinators,       test_bad_csv.py                      55
partnerships)
topic Markdown and front matter                test_bad_topics.py                   27
config.toml                                    test_bad_config.py                   31
inbound mail: ``rapport inbox classify FILE``  test_bad_inbound.py                  22
inbound mail: ``rapport inbox poll`` (Maildir) test_bad_inbound.py                   2
template context (topic emails, nudges, an     test_bad_context.py                 115
end-to-end send)
total                                                                              252
=============================================  ================================  =====

The poll cases each deliver many messages: one carries all twenty hostile messages of the
classify cases plus an oversized one, the other six forged or borrowed reply and unsubscribe keys.
"""
