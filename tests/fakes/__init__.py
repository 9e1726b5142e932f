"""Local fakes of the MailChimp Marketing API v3 and SurveyMonkey API v3: the endpoints the
sync worker uses, with their documented status codes and error bodies, state in memory,
fault injection (429 with Retry-After, 500, dropped connections) and a call log."""
