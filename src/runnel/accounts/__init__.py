"""Accounts: users, password hashes, sessions, API keys and per-user limits.

``AccountService`` (``service.py``) is the policy (who may sign up, sign in, manage whom);
``AccountStore`` (``store.py``) its SQL; ``passwords``, ``tokens`` and ``throttle`` the
parts it is built from. The HTTP layer resolves every request to one ``Principal``
through ``AccountService.authenticate`` and scopes everything below by its ``id``.
"""
