# Dates as DD-MMM-YYYY, the form clinical research uses on paper and screen because 03/04/2026
# means April to one reader and March to another. Input still takes ISO (the date pickers send it).
from django.conf.locale.en.formats import *  # noqa: F403

DATE_FORMAT = "d M Y"  # 21 Nov 2026
SHORT_DATE_FORMAT = "d M Y"
DATETIME_FORMAT = "d M Y H:i"  # 21 Nov 2026 14:05
SHORT_DATETIME_FORMAT = "d M Y H:i"
THOUSAND_SEPARATOR = ","
NUMBER_GROUPING = 3
