"""Helpers the tests share (not tests themselves): a local OpenAI-compatible server that replays scripted
replies (fake_openai_server), the app under test (app_support), small indexes and models built once into
tests/artifacts (agent_index, tiny_vlm), servers on 127.0.0.1 (served, attention_process), reply scripts."""
