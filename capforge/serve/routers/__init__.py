"""The API's routes, grouped by what they are for: recognise (JSON, multipart, the Bearcat
form), admin (models, health, metrics), feedback, review (outcome reports and the review queue),
and demo (synthetic captchas). Each module's ``router(registry, metrics)`` builds its FastAPI
router for one app."""
