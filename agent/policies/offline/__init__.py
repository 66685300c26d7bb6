"""The offline policy (OCR + rules, no model): see policy.py for the plan and readers/ for the plug-ins.

Modules, in import order (each imports only those above it): terms, question, layout, spans, prose,
page, weights, scoring, readers/, crop, conversation, policy.
"""
from .policy import DESCRIPTION, HONEST_PREFIX, NOT_FOUND, OfflinePolicy

__all__ = ["DESCRIPTION", "HONEST_PREFIX", "NOT_FOUND", "OfflinePolicy"]
