"""OpenAI's Responses API: POST /v1/responses, GET and DELETE /v1/responses/{id}, GET
/v1/responses/{id}/input_items (`routes.py`); bodies (`schema.py`); conversation rebuilding
from `previous_response_id` (`translate.py`); typed stream events (`stream.py`); the stored
responses (`store.py`)."""
