"""The shape of every amount column: NUMERIC(38, 18). The API's amount field and the models'
columns read these numbers from here, so a request can never carry more digits than a column holds."""

AMOUNT_DIGITS = 38
AMOUNT_PLACES = 18
