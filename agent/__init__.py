"""FaceReason's reasoning agent: explain facial expressions from an `Analysis`.

    from agent import explain, chat, ChatSession
    result = explain("video.mp4")          # ExplainResult: explanations, text, timings
    session = ChatSession.start(result)
    answer = chat(session, "what happens at second 7?")
"""

from agent.chat import ChatAnswer, ChatSession, chat
from agent.graph import explain
from agent.schema import Conclusion, ExplainResult, Explanation, KeyObservation, parse_explanation

__all__ = ["ChatAnswer", "ChatSession", "Conclusion", "ExplainResult", "Explanation",
           "KeyObservation", "chat", "explain", "parse_explanation"]
