FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml ./
RUN pip install --no-cache-dir -e . 2>/dev/null || true
COPY . .
RUN pip install --no-cache-dir -e . && DJANGO_DEBUG=true python manage.py collectstatic --no-input
# var/ (seals of the audit chain, exports) is a volume the unprivileged user writes.
RUN mkdir -p /app/var && chown nobody /app/var
USER nobody
EXPOSE 8000
CMD ["gunicorn", "trialsite.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
